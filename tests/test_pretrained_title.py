"""A pretrained title encoder in the graph: `ModelConfig(text_model=DIR, title_encoder=..., fine_tune_text=...)`.

The text encoder is the tiny one of `text_model_fixture` (same interface as the converted
multilingual-e5-small: string `[batch]` in, `[batch, dim]` out), so these tests run in seconds.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.cli import main
from tfrec_video.errors import ConfigError
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel, load_model, save_model
from tfrec_video.serving import export as export_lib
from tfrec_video.training.run_config import load_run_config
from text_model_fixture import reference_vectors, save_broken_text_model
from toy import SMALL, small_model

TEXT_DIM = 8  # the width of the `text_model` fixture (conftest)


def _batch(impressions, rows=slice(0, 64)):
    return {name: tf.constant(values[rows]) for name, values in impressions.items()}


def _hub_variable(model):
    return model.candidate_tower.pretrained_title.hub_layer.variables[0]


@pytest.mark.parametrize("mode", ["pretrained", "both"])
def test_pretrained_and_both_train_save_and_load(mode, text_model, toy_catalog_and_impressions, tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    model = small_model(catalog, impressions, epochs=1, title_encoder=mode, text_model=text_model)
    tower = model.candidate_tower
    assert (tower.title_encoder is None) == (mode == "pretrained")
    assert tower.pretrained_title.output_dim == TEXT_DIM
    # The tower reads the saved model's own vectors of the titles.
    titles = catalog["title"][:5]
    np.testing.assert_allclose(tower.pretrained_title(tf.constant(titles)).numpy(),
                               reference_vectors(text_model, titles), atol=1e-6)
    history = model.history.history
    assert np.isfinite(history["loss"]).all()

    # The title reaches the embedding through the text model: another title, another embedding.
    features = {name: tf.constant(catalog[name][:2]) for name in model.video_feature_names}
    other = dict(features, title=tf.constant(["football goal", "football goal"]))
    assert not np.allclose(model.embed_videos(features).numpy(), model.embed_videos(other).numpy())

    # get_config / from_config round-trip, and save / load give the same model.
    config = model.get_config()
    assert config["config"]["title_encoder"] == mode and config["config"]["text_model"] == text_model
    rebuilt = VideoRecModel.from_config(json.loads(json.dumps(config)))
    assert rebuilt.config == model.config
    batch = _batch(impressions)
    expected = model(batch)
    loaded = load_model(save_model(model, str(tmp_path / "saved")))
    assert loaded.config.title_encoder == mode
    for key in ("click_probability", "video_embedding", "query_embedding"):
        np.testing.assert_allclose(loaded(batch)[key].numpy(), expected[key].numpy(), atol=1e-5)


@pytest.mark.parametrize("fine_tune", [False, True])
def test_the_text_model_is_frozen_unless_fine_tune_text(fine_tune, text_model, toy_catalog_and_impressions, tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    model = small_model(catalog, impressions, title_encoder="pretrained", text_model=text_model,
                        fine_tune_text=fine_tune)
    variable = _hub_variable(model)
    before = variable.numpy().copy()
    np.testing.assert_array_equal(before, tf.saved_model.load(text_model).table.numpy())
    model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(128).take(2), verbose=0)
    assert any(v is variable for v in model.trainable_variables) == fine_tune
    moved = np.abs(variable.numpy() - before).max()
    if not fine_tune:
        assert moved == 0
        return
    assert moved > 0
    # The fine-tuned weights are the model's: saved and loaded, not read again from the text model's directory.
    loaded = load_model(save_model(model, str(tmp_path / "tuned")))
    np.testing.assert_array_equal(_hub_variable(loaded).numpy(), variable.numpy())
    batch = _batch(impressions)
    np.testing.assert_allclose(loaded(batch)["video_embedding"].numpy(), model(batch)["video_embedding"].numpy(),
                               atol=1e-5)


def test_cnn_stays_the_default(toy_catalog_and_impressions):
    catalog, impressions = toy_catalog_and_impressions
    config = ModelConfig()
    assert (config.title_encoder, config.text_model, config.fine_tune_text) == ("cnn", None, False)
    model = small_model(catalog, impressions)
    assert model.candidate_tower.pretrained_title is None and model.candidate_tower.title_encoder is not None
    # text_model with title_encoder cnn is not loaded (one config compares the three modes).
    unused = small_model(catalog, impressions, text_model="/nowhere/at/all")
    assert unused.candidate_tower.pretrained_title is None


def test_the_yaml_model_section_takes_the_new_fields(tmp_path, text_model):
    os.symlink(text_model, tmp_path / "encoder")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {builtin: tiny}\nmodel: {title_encoder: both, text_model: encoder, fine_tune_text: true}\n")
    config = load_run_config(str(cfg))
    # Relative to the config file, like every local path in it.
    assert config.model.text_model == str(tmp_path / "encoder")
    assert (config.model.title_encoder, config.model.fine_tune_text) == ("both", True)


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize("fields, message", [
    ({"title_encoder": "bert"},
     r"ModelConfig.title_encoder must be one of \('cnn', 'pretrained', 'both'\), got 'bert'"),
    ({"title_encoder": "both", "text_model": ""}, r"ModelConfig.text_model must be a TF Hub handle or SavedModel"),
    ({"fine_tune_text": "yes"}, r"ModelConfig.fine_tune_text must be true or false, got 'yes'"),
])
def test_bad_title_encoder_fields_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


@pytest.mark.bad_input
def test_pretrained_without_text_model_or_title_embedding_is_a_config_error(tmp_path, toy_catalog_and_impressions):
    catalog, impressions = toy_catalog_and_impressions
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    for mode in ("pretrained", "both"):
        with pytest.raises(ConfigError, match=rf"ModelConfig.title_encoder='{mode}' needs a pretrained title vector: "
                                              r"set ModelConfig.text_model .* or give the catalog a title_embedding"):
            VideoRecModel(ModelConfig(**SMALL, title_encoder=mode), vocab, catalog=catalog)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {builtin: tiny, builtin_dir: cache}\nmodel:\n  title_encoder: pretrained\n"
                   "training: {epochs: 1}\n")
    assert main(["train", "--config", str(cfg)]) == 2  # the built-in data has no title_embedding column


def test_pretrained_without_text_model_reads_only_the_title_embedding_column(toy_catalog_and_impressions):
    catalog, impressions = toy_catalog_and_impressions
    vectors = np.random.default_rng(0).normal(size=(len(catalog["video_id"]), 6)).astype(np.float32)
    catalog = dict(catalog, title_embedding=vectors)
    impressions = dict(impressions, title_embedding=vectors[[int(v[1:]) for v in impressions["video_id"]]])
    model = small_model(catalog, impressions, epochs=1, title_encoder="pretrained", media_components=4)
    tower = model.candidate_tower
    assert tower.title_encoder is None and tower.pretrained_title is None  # no CNN, no text model
    assert tower.title_embedding_projection is not None and np.isfinite(model.history.history["loss"]).all()
    features = {name: tf.constant(catalog[name][:4]) for name in model.video_feature_names}
    embedded = model.embed_videos(features).numpy()
    retitled = dict(features, title=tf.constant(["football goal"] * 4))
    np.testing.assert_allclose(model.embed_videos(retitled).numpy(), embedded, atol=1e-6)  # the title is unread
    moved = dict(features, title_embedding=tf.constant(vectors[4:8]))
    assert not np.allclose(model.embed_videos(moved).numpy(), embedded)
    both = small_model(catalog, impressions, title_encoder="both", media_components=4)
    assert both.candidate_tower.title_encoder is not None and both.candidate_tower.pretrained_title is None


@pytest.mark.bad_input
@pytest.mark.parametrize("kind, message", [
    ("missing", r"is not a directory"),
    ("not_a_model", r"does not load: .*saved_model.pb"),
    ("rank1", r"returns float32 \[batch\] for a string \[batch\]"),
    ("float_input", r"takes float32 \[batch, 8\], not string \[batch\]"),
])
def test_a_text_model_that_is_not_string_to_batch_dim_is_a_config_error(kind, message, toy_catalog_and_impressions, tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    path = tmp_path / kind
    if kind == "not_a_model":
        path.mkdir()
        (path / "README").write_text("not a SavedModel")
    elif kind != "missing":
        save_broken_text_model(path, kind)
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    with pytest.raises(ConfigError) as caught:
        VideoRecModel(ModelConfig(**SMALL, title_encoder="both", text_model=str(path)), vocab, catalog=catalog)
    text = str(caught.value)
    assert text.startswith("ModelConfig.text_model: the text model") and str(path) in text
    assert ("expected a TF Hub-style SavedModel whose __call__ takes a string [batch] and returns float32 "
            "[batch, dim]") in text
    assert re.search(message, text), text


# -- export: a fresh process with TF and TF Text only -----------------------------------------------------------

_SERVE = """
import json, sys
import tensorflow as tf
import tensorflow_text  # the WordPiece ops of the CNN; nothing from tfrec_video or tensorflow_hub is imported
request = json.loads(sys.stdin.read())
model = tf.saved_model.load(request["dir"])
out = {}
for name, inputs in request["calls"].items():
    signature = model.signatures[name]
    specs = signature.structured_input_signature[1]
    result = signature(**{k: tf.constant(v, specs[k].dtype) for k, v in inputs.items()})
    out[name] = {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist() for k, v in result.items()}
assert "tfrec_video" not in sys.modules and "tensorflow_hub" not in sys.modules
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_export_serves_the_same_scores_in_a_fresh_process(text_model, toy_catalog_and_impressions, tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    model = small_model(catalog, impressions, epochs=1, title_encoder="both", text_model=text_model)
    version_dir = export_lib.export_saved_model(model, catalog, str(tmp_path / "saved_models"), k=10, n=4)
    rows = [0, 7, 21]
    query = {name: impressions[name][rows].tolist() for name in model.query_feature_names}
    videos = {name: catalog[name][:6].tolist() for name in model.video_feature_names}
    videos["title"][5] = "a title never seen in training 猫"
    request = {"dir": version_dir, "calls": {"serving_default": query, "embed_video": videos}}
    result = subprocess.run([sys.executable, "-c", _SERVE], input=json.dumps(request), capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])

    expected = model.embed_videos({k: tf.constant(v) for k, v in videos.items()}, training=False).numpy()
    np.testing.assert_allclose(served["embed_video"]["video_embedding"], expected, atol=1e-5)
    # Each served video's retrieval score and click probability are the in-process model's.
    recommended = served["serving_default"]
    index = {v: i for i, v in enumerate(catalog["video_id"])}
    queries = model.embed_queries({k: tf.constant(v) for k, v in query.items()}, training=False).numpy()
    for i, ids in enumerate(recommended["video_ids"]):
        assert len(ids) == 4
        rows_of = [index[v] for v in ids]
        candidates = {name: tf.constant(catalog[name][rows_of]) for name in model.video_feature_names}
        embedded = model.embed_videos(candidates, training=False).numpy()
        np.testing.assert_allclose(recommended["retrieval_score"][i], embedded @ queries[i], atol=1e-5)
        pairs = {name: tf.repeat(tf.constant(query[name][i:i + 1]), len(ids), axis=0)
                 for name in model.query_feature_names}
        pairs.update(candidates)
        np.testing.assert_allclose(recommended["click_probability"][i],
                                   tf.sigmoid(model.rank_logits(pairs, training=False)).numpy(), atol=1e-5)
