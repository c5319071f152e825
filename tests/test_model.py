"""Towers and `VideoRecModel`: shapes, OOV, cold start, logQ, losses, modes, config round trips."""

import numpy as np
import pytest
import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
from tfrec_video.errors import ConfigError
from tfrec_video.features import Vocabularies, adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.towers import IdEmbedding, TitleEncoder

from toy import SMALL, toy_data



@pytest.fixture(scope="module")
def data():
    return toy_data()


def _model(catalog, impressions, **overrides):
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    model = VideoRecModel(ModelConfig(**{**SMALL, **overrides}), vocab, catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(5e-3))
    return model


def _ds(impressions, batch=128):
    return tf.data.Dataset.from_tensor_slices(impressions).batch(batch)


def test_tower_output_shapes(data):
    catalog, impressions = data
    model = _model(catalog, impressions)
    batch = {k: v[:7] for k, v in impressions.items()}
    out = model(batch)
    assert out["query_embedding"].shape == (7, 16)
    assert out["video_embedding"].shape == (7, 16)
    assert out["click_probability"].shape == (7,)
    np.testing.assert_allclose(tf.norm(out["query_embedding"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tf.norm(out["video_embedding"], axis=1), 1.0, atol=1e-5)
    assert set(model.query_feature_names) == {"user_id", "history", "hour", "device"}
    assert set(model.video_feature_names) == {"video_id", "title", "category", "duration_s", "image_embedding",
                                              "audio_embedding"}


def test_oov_ids_spread_over_hashed_buckets():
    layer = IdEmbedding(["a", "b"], embedding_dim=4, num_oov_buckets=16)
    unknown = tf.constant([f"new-user-{i}" for i in range(50)])
    index = layer.lookup(unknown).numpy()
    assert ((index >= 1) & (index <= 16)).all()
    assert len(set(index.tolist())) > 5, "unknown ids must not all share one OOV row"
    assert layer.lookup(tf.constant([""])).numpy().tolist() == [0]
    assert layer.lookup(tf.constant(["a", "b"])).numpy().tolist() == [17, 18]


def test_id_dropout_only_in_training():
    layer = IdEmbedding([f"v{i}" for i in range(100)], 4, num_oov_buckets=4, dropout=0.5, seed=1)
    ids = tf.constant([f"v{i}" for i in range(100)])
    np.testing.assert_array_equal(layer(ids, training=False), layer(ids, training=False))
    changed = np.any(layer(ids, training=True).numpy() != layer(ids, training=False).numpy(), axis=1)
    assert 20 < changed.sum() < 80


def test_unseen_videos_get_distinct_content_driven_embeddings(data):
    catalog, impressions = data
    model = _model(catalog, impressions)
    model.fit(_ds(impressions), epochs=2, verbose=0)
    base = {k: v[:2].copy() for k, v in catalog.items()}
    base["video_id"] = np.array(["brand-new-1", "brand-new-2"], object)
    emb = model.embed_videos(base).numpy()
    assert not np.allclose(emb[0], emb[1], atol=1e-3), "two new videos with different content must differ"
    # Same unseen id, different content: the embedding follows the content.
    changed = dict(base)
    changed["title"] = np.array(["football goal 足球", "cat kitten 猫"], object)
    changed["image_embedding"] = base["image_embedding"][::-1].copy()
    emb2 = model.embed_videos(changed).numpy()
    assert np.abs(emb - emb2).max() > 1e-2


def test_title_encoder_handles_any_language_and_empty():
    encoder = TitleEncoder(["[PAD]", "[UNK]", "cat", "猫", "##s"], sequence_length=6, token_dim=4, conv_widths=(1, 2),
                           filters=3, output_dim=5)
    ids = encoder.tokenize(tf.constant(["cats 猫猫", "", "qqq"])).numpy()
    assert ids[0].tolist()[:4] == [2, 4, 3, 3]
    assert ids[1].tolist() == [0] * 6
    assert ids[2].tolist()[0] == 1  # [UNK]
    out = encoder(tf.constant(["cats 猫猫", ""]))
    assert out.shape == (2, 5) and np.isfinite(out.numpy()).all()
    again = TitleEncoder.from_config(encoder.get_config())
    assert again.vocabulary == encoder.vocabulary and again.conv_widths == (1, 2)


def test_logq_sampling_probabilities(data):
    catalog, impressions = data
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    ids, counts = np.unique(impressions["video_id"], return_counts=True)
    expected = dict(zip(ids.tolist(), (counts / counts.sum()).tolist()))
    probs = vocab.candidate_sampling_probabilities()
    for vid, p in zip(vocab.video_ids, probs):
        assert p == pytest.approx(expected[vid], rel=1e-6)
    assert probs.sum() == pytest.approx(1.0, rel=1e-6)
    model = VideoRecModel(ModelConfig(**SMALL), vocab, catalog=catalog)
    index = model.video_embedding.lookup(tf.constant([vocab.video_ids[0], "never-seen"]))
    gathered = tf.gather(model._sampling_probability, index).numpy()
    assert gathered[0] == pytest.approx(probs[0])
    assert gathered[1] == pytest.approx(probs.min())


def test_loss_decreases_and_learns_preferences(data):
    catalog, impressions = data
    model = _model(catalog, impressions)
    history = model.fit(_ds(impressions), epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert history.history["auc"][-1] > 0.75


@pytest.mark.parametrize("mode", ["retrieval_only", "ranking_only"])
def test_single_stage_modes(data, mode):
    catalog, impressions = data
    weights = dict(retrieval_weight=1.0, ranking_weight=0.0) if mode == "retrieval_only" else \
        dict(retrieval_weight=0.0, ranking_weight=1.0)
    model = _model(catalog, impressions, **weights)
    model(dict((k, v[:2]) for k, v in impressions.items()))  # build
    head_before = [w.numpy().copy() for w in model.ranking_head.trainable_weights]
    query_before = [w.numpy().copy() for w in model.query_tower.mlp.trainable_weights]
    history = model.fit(_ds(impressions), epochs=1, verbose=0)
    head_moved = any(np.abs(a - w.numpy()).max() > 0 for a, w in zip(head_before, model.ranking_head.trainable_weights))
    query_mlp_moved = any(np.abs(a - w.numpy()).max() > 0 for a, w in zip(query_before, model.query_tower.mlp.trainable_weights))
    if mode == "retrieval_only":
        assert not head_moved and query_mlp_moved
        assert history.history["retrieval_loss"][-1] > 0 and history.history["ranking_loss"][-1] == 0
    else:
        # The ranking head reads q ⊙ c, so the tower MLPs still learn; retrieval's loss is never computed.
        assert head_moved
        assert history.history["retrieval_loss"][-1] == 0 and history.history["ranking_loss"][-1] > 0


def test_retrieval_uses_only_clicked_rows(data):
    catalog, impressions = data
    model = _model(catalog, impressions, ranking_weight=0.0)
    batch = {k: v[:64] for k, v in impressions.items()}
    loss = float(model.compute_loss(batch, training=False))
    # Changing which video an unclicked row points at changes only the negatives, not the positives:
    # with no clicked rows at all, the retrieval loss is exactly zero.
    none = dict(batch, clicked=np.zeros(64, np.int64))
    assert float(model.compute_loss(none, training=False)) == 0.0
    assert loss > 0


DROPS = {
    "no_audio": (["audio_embedding"], []),
    "no_images": (["image_embedding"], []),
    "no_history": ([], ["history"]),
    "no_context": ([], ["hour", "device"]),
    "video_id_and_title_only": (["category", "duration_s", "image_embedding", "audio_embedding"],
                                ["history", "hour", "device"]),
}


@pytest.mark.parametrize("case", sorted(DROPS))
def test_model_trains_from_files_without_optional_features(case, tmp_path):
    """Each optional feature may be absent from the files: the towers adapt from what is there."""
    from tfrec_video.data import write_table
    from tfrec_video.data.pipeline import impressions_dataset, load_catalog
    from tfrec_video.data.schema import catalog_schema, impressions_schema
    from tfrec_video.training import TrainingConfig, fit_model

    drop_catalog, drop_impressions = DROPS[case]
    catalog, impressions = toy_data(n_rows=400)
    catalog = {k: v for k, v in catalog.items() if k not in drop_catalog}
    rows = {k: v for k, v in impressions.items()
            if k in ("user_id", "history", "hour", "device", "video_id", "clicked") and k not in drop_impressions}
    # Files hold only the columns the user has; they are read with the full, documented schemas.
    cat_schema, imp_schema = catalog_schema(8, 4), impressions_schema(5)
    write_table(catalog, tmp_path / "catalog" / "part-0.csv", cat_schema.select(list(catalog)))
    write_table(rows, tmp_path / "train" / "part-0.parquet", imp_schema.select(list(rows)))
    loaded = load_catalog(str(tmp_path / "catalog"), cat_schema)
    model, history = fit_model(loaded, str(tmp_path / "train"), imp_schema, ModelConfig(**SMALL),
                               TrainingConfig(batch_size=128, epochs=2), verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert set(model.video_feature_names) == {"video_id"} | {k for k in catalog if k != "video_id"}
    assert set(model.query_feature_names) == {k for k in rows if k not in ("video_id", "clicked")}
    batch = next(iter(impressions_dataset(str(tmp_path / "train"), loaded, imp_schema, batch_size=16)))
    out = model(batch)
    assert np.isfinite(out["click_probability"].numpy()).all()


def test_config_round_trips(data):
    catalog, impressions = data
    config = ModelConfig(**SMALL, history_pooling="attention")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="embeding_dim.*did you mean 'embedding_dim'"):
        ModelConfig.from_dict({"embeding_dim": 3})
    with pytest.raises(ConfigError, match="embedding_dim"):
        ModelConfig(embedding_dim=0)
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    assert Vocabularies.from_dict(vocab.to_dict()) == vocab
    model = VideoRecModel(config, vocab, catalog=catalog)
    batch = {k: v[:5] for k, v in impressions.items()}
    out = model(batch)
    clone = VideoRecModel.from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch)["click_probability"], out["click_probability"], rtol=1e-6)


def test_weights_restore_from_checkpoint(data, tmp_path):
    catalog, impressions = data
    model = _model(catalog, impressions)
    model.fit(_ds(impressions), epochs=1, verbose=0)
    batch = {k: v[:5] for k, v in impressions.items()}
    expected = model(batch)["click_probability"].numpy()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = _model(catalog, impressions)
    fresh(batch)
    assert not np.allclose(fresh(batch)["click_probability"], expected)
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh(batch)["click_probability"], expected, rtol=1e-6)


def test_tower_dropout_does_not_leak_the_positive_pair(data):
    # With equal dropout masks in the two towers a model learns to match masks instead of users and
    # videos: its training-mode loss collapses far below its eval-mode loss. Honest dropout only adds
    # noise, so the training-mode loss stays at or above the eval-mode one.
    catalog, impressions = data
    model = _model(catalog, impressions, tower_dropout=0.5, ranking_weight=0.0, video_id_dropout=0.0)
    model.fit(_ds(impressions, batch=256), epochs=8, verbose=0)
    batch = {k: v[:256] for k, v in impressions.items()}
    loss = tf.function(lambda f, training: model.compute_loss(f, training=training))
    tf.keras.utils.set_random_seed(3)
    train_loss = np.mean([float(loss(batch, True)) for _ in range(5)])
    eval_loss = float(loss(batch, False))
    assert train_loss > 0.8 * eval_loss, (train_loss, eval_loss)


def test_user_and_video_id_dropout_draw_independently():
    users = IdEmbedding([f"x{i}" for i in range(500)], 4, 4, dropout=0.5, seed=0, name="user_id")
    videos = IdEmbedding([f"x{i}" for i in range(500)], 4, 4, dropout=0.5, seed=0, name="video_id")
    ids = tf.constant([f"x{i}" for i in range(500)])
    u = np.any(users(ids, training=True).numpy() != users(ids, training=False).numpy(), axis=1)
    v = np.any(videos(ids, training=True).numpy() != videos(ids, training=False).numpy(), axis=1)
    assert 0.3 < np.mean(u == v) < 0.7


def test_towers_round_trip_through_config(data):
    catalog, impressions = data
    model = _model(catalog, impressions)
    batch = {k: v[:3] for k, v in impressions.items()}
    for tower in (model.query_tower, model.candidate_tower):
        tower(batch)
        clone = type(tower).from_config(tower.get_config())
        clone(batch)
        clone.set_weights(tower.get_weights())
        np.testing.assert_allclose(clone(batch), tower(batch), rtol=1e-5, atol=1e-6)
        assert clone.input_names == tower.input_names


def test_keras_fit_evaluate_and_predict(data):
    """The Keras loop as users call it: fit, then evaluate (loss and metrics) and predict (the outputs)."""
    catalog, impressions = data
    model = _model(catalog, impressions)
    model.fit(_ds(impressions), epochs=1, verbose=0)
    results = model.evaluate(_ds(impressions), return_dict=True, verbose=0)
    for name in ("auc", "logloss", "retrieval_loss", "ranking_loss", "loss"):
        assert np.isfinite(results[name]), name
    assert 0.5 < results["auc"] <= 1.0
    predictions = model.predict(_ds(impressions), verbose=0)
    n = len(impressions["user_id"])
    assert predictions["click_probability"].shape == (n,)
    assert predictions["query_embedding"].shape == (n, SMALL["embedding_dim"])
    assert ((predictions["click_probability"] > 0) & (predictions["click_probability"] < 1)).all()
