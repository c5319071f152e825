"""Mixed precision: float16 layers, float32 losses, logits, outputs and exports, loss scaling, no policy leak."""

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.data import write_table
from tfrec_video.data.pipeline import load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import ConfigError
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.training import TrainingConfig, dtype_policy, fit_model
from toy import SMALL, toy_data

COLUMNS = ("user_id", "history", "hour", "device", "video_id", "clicked")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SMALL model fitted with `TrainingConfig(mixed_precision=True)` from files, and a batch."""
    directory = tmp_path_factory.mktemp("mixed")
    catalog, impressions = toy_data(n_rows=384)
    write_table(catalog, directory / "catalog" / "part-0.parquet", catalog_schema(8, 4).select(list(catalog)))
    write_table({k: impressions[k] for k in COLUMNS}, directory / "train" / "part-0.tfrecord", impressions_schema(5))
    catalog = load_catalog(str(directory / "catalog"), catalog_schema(8, 4))
    # Attention pooling: its padding mask is the one place a float32 constant (-1e9) would be -inf in float16.
    model, history = fit_model(catalog, str(directory / "train"), impressions_schema(5),
                               ModelConfig(**SMALL, history_pooling="attention"),
                               TrainingConfig(batch_size=128, epochs=2, mixed_precision=True), verbose=0)
    batch = {k: tf.constant(v[:16]) for k, v in impressions.items()}
    return model, history, catalog, batch


def test_the_global_policy_is_restored(trained):
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with dtype_policy("mixed_float16"):
            raise RuntimeError("fails while building")
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_layers_compute_in_float16_with_float32_variables(trained):
    model = trained[0]
    assert model.dtype_policy.name == "mixed_float16"
    # compile wrapped fit_model's Adam for loss scaling, as tf_keras does under mixed_float16.
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    for layer in (model.query_tower.mlp.layers_[0], model.candidate_tower.title_encoder.convolutions[0],
                  model.candidate_tower.title_encoder, model.ranking_head.mlp.layers_[0],
                  model.query_tower.history_pooling):
        assert layer.compute_dtype == "float16", layer.name
    # The logit layer, the tasks and their metrics stay float32.
    assert model.ranking_head.mlp.layers_[-1].compute_dtype == "float32"
    assert model.retrieval_task.compute_dtype == model.ranking_task.compute_dtype == "float32"
    assert {w.dtype.name for w in model.trainable_weights} == {"float32"}


def test_outputs_logits_and_losses_are_float32_and_finite(trained):
    model, history, _, batch = trained
    for name in ("loss", "retrieval_loss", "ranking_loss", "logloss", "auc"):
        assert np.isfinite(history.history[name]).all(), (name, history.history[name])
    out = model(batch)
    for name, value in out.items():
        assert value.dtype == tf.float32 and np.isfinite(value.numpy()).all(), name
    assert ((out["click_probability"].numpy() > 0) & (out["click_probability"].numpy() < 1)).all()
    logits = model.rank_logits(batch)
    assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()
    loss = model.compute_loss(batch)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    # An empty history (all padding) pools to zeros, not NaN, in float16 too.
    empty = dict(batch, history=tf.fill(tf.shape(batch["history"]), ""))
    assert np.isfinite(model(empty)["click_probability"].numpy()).all()


def test_train_step_scales_the_loss_and_unscales_the_gradients():
    catalog, impressions = toy_data(n_rows=128)
    batch = {k: v[:64] for k, v in impressions.items()}
    vocabularies = adapt(catalog, impressions, title_vocabulary_size=80)
    # No dropout: its masks are drawn in the compute dtype, so float16 and float32 draw different ones.
    config = ModelConfig(**SMALL, video_id_dropout=0.0, user_id_dropout=0.0, ranking_dropout=0.0)
    steps = []
    for policy in (None, "mixed_float16"):
        tf.keras.utils.set_random_seed(0)
        with dtype_policy(policy):
            model = VideoRecModel(config, vocabularies, catalog=catalog)
            model(batch)
            if policy is None:
                initial = model.get_weights()
            else:
                model.set_weights(initial)
            # Plain SGD: its step is the gradient times 0.1, so a gradient left multiplied by the loss
            # scale would show (Adam's step would hide it). The scale starts at 2**10 rather than Keras's
            # 2**15, at which this model's first gradients overflow float16 and the first step is skipped.
            optimizer = tf.keras.optimizers.SGD(0.1)
            if policy:
                optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer, initial_scale=2**10)
            model.compile(optimizer)
            before = [w.numpy() for w in model.trainable_weights]
            model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(64), verbose=0)
        steps.append(np.concatenate([(w.numpy() - b).ravel() for w, b in zip(model.trainable_weights, before)]))
    assert float(model.optimizer.loss_scale) == 2**10 and int(model.optimizer.dynamic_counter) == 1  # a finite step
    float32_step, mixed_step = steps
    assert np.abs(float32_step).max() > 1e-3
    # The same step up to float16 rounding.
    assert np.linalg.norm(mixed_step - float32_step) < 0.05 * np.linalg.norm(float32_step)


def test_the_export_keeps_float32_and_string_signatures(trained, tmp_path):
    from tfrec_video.serving.export import export_saved_model
    import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

    model, _, catalog, batch = trained
    loaded = tf.saved_model.load(export_saved_model(model, catalog, str(tmp_path), name="video_rec", k=10, n=5))
    inputs = {"user_id": tf.string, "history": tf.string, "hour": tf.int64, "device": tf.string,
              "video_id": tf.string, "title": tf.string, "category": tf.string, "duration_s": tf.float32,
              "image_embedding": tf.float32, "audio_embedding": tf.float32, "exclude": tf.string,
              "diversity": tf.float32}
    outputs = {"video_ids": tf.string, "click_probability": tf.float32, "retrieval_score": tf.float32,
               "query_embedding": tf.float32, "video_embedding": tf.float32, "score": tf.float32}
    for name, signature in loaded.signatures.items():
        for key, spec in signature.structured_input_signature[1].items():
            assert spec.dtype == inputs[key], (name, key, spec)
        for key, spec in signature.structured_outputs.items():
            assert spec.dtype == outputs[key], (name, key, spec)
    served = loaded.signatures["serving_default"](**{k: batch[k] for k in model.query_feature_names})
    assert served["video_ids"].shape == (16, 5) and np.isfinite(served["click_probability"].numpy()).all()
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_values():
    assert TrainingConfig().dtype_policy is None
    assert TrainingConfig(mixed_precision=True).dtype_policy == "mixed_float16"
    assert TrainingConfig(mixed_precision="mixed_bfloat16").dtype_policy == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="mixed_precision must be one of"):
        TrainingConfig(mixed_precision="float16")
