"""The catalog table's prepared columns: each watched video's title tokens and PCA projections are held
once, not recomputed at every training step, and give the same embeddings as the raw content."""

import json

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.models import VideoRecModel, load_model, save_model
from toy import small_model, toy_data


def _model(**overrides):
    catalog, impressions = toy_data(n_rows=256)
    model = small_model(catalog, impressions, epochs=1, **overrides)
    return model, catalog, impressions


def test_the_table_holds_each_videos_tokens_and_projections():
    model, catalog, _ = _model()
    table = model.catalog_table
    assert set(model.candidate_tower.prepared_columns) == {"title_tokens", "image_embedding_components",
                                                           "audio_embedding_components"}
    tokens = table.values["title_tokens"].numpy()
    expected = model.candidate_tower.title_encoder.tokenize(tf.constant(catalog["title"])).numpy()
    np.testing.assert_array_equal(tokens[1:], expected)
    assert not tokens[0].any()  # the unknown-video row: an empty title, and the projection of a zero vector
    np.testing.assert_allclose(table.values["image_embedding_components"].numpy()[0],
                               model.candidate_tower.image_pca(np.zeros([1, 8], np.float32)).numpy()[0], rtol=1e-6)
    pca = model.candidate_tower.image_pca
    np.testing.assert_allclose(table.values["image_embedding_components"].numpy()[1:],
                               pca(catalog["image_embedding"]).numpy(), rtol=1e-6, atol=1e-6)


def test_prepared_content_embeds_watched_videos_as_the_raw_content_does(tmp_path):
    """A model without prepared columns (as saved before them), given the same weights, embeds the
    same histories the same way."""
    model, catalog, impressions = _model()
    raw = VideoRecModel(model.given_config, model.vocabularies, catalog=catalog, prepared_catalog=False)
    assert "title_tokens" not in raw.catalog_table.values
    features = {name: tf.constant(impressions[name][:64]) for name in
                set(model.query_feature_names) | set(model.video_feature_names)}
    history = features["history"].numpy()
    history[0, 0] = b"a-video-newer-than-the-model"  # looks up to the unknown-video row
    features["history"] = tf.constant(history)
    raw.rank_logits(features, training=False)  # builds
    # By object path: the raw model lacks only the prepared columns.
    tf.train.Checkpoint(model=raw).read(
        tf.train.Checkpoint(model=model).write(str(tmp_path / "weights"))).expect_partial()
    np.testing.assert_allclose(model._history_embeddings(features, training=False).numpy(),
                               raw._history_embeddings(features, training=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(model.embed_queries(features).numpy(), raw.embed_queries(features).numpy(), atol=1e-5)


def test_watched_videos_are_embedded_from_the_prepared_columns_not_the_raw_ones():
    """Training reads the held tokens and projections: changing them (and only them) changes the
    watched videos' embeddings."""
    model, _, impressions = _model()
    features = {"history": tf.constant(impressions["history"][:32])}
    before = model._history_embeddings(features, training=False).numpy()
    for name in ("title_tokens", "image_embedding_components"):
        variable = model.catalog_table.values[name]
        kept = variable.numpy()
        variable.assign(np.zeros_like(kept))
        try:
            after = model._history_embeddings(features, training=False).numpy()
        finally:
            variable.assign(kept)
        assert np.abs(after - before).max() > 1e-3, name


def test_a_model_saved_before_prepared_columns_still_loads(tmp_path):
    """model.json without `prepared_catalog` (every model saved before it) rebuilds the table as it was."""
    catalog, impressions = toy_data(n_rows=256)
    old = small_model(catalog, impressions, epochs=0)
    legacy = VideoRecModel(old.given_config, old.vocabularies, catalog=catalog, prepared_catalog=False)
    legacy.compile(tf.keras.optimizers.Adam(1e-3))
    features = {name: tf.constant(impressions[name][:8]) for name in
                set(legacy.query_feature_names) | set(legacy.video_feature_names)}
    expected = legacy.rank_logits(features, training=False).numpy()
    directory = save_model(legacy, str(tmp_path / "model"))
    path = tmp_path / "model" / "model.json"
    saved = json.loads(path.read_text())
    del saved["config"]["prepared_catalog"]
    path.write_text(json.dumps(saved))
    loaded = load_model(directory)
    assert loaded.prepared_catalog is False
    np.testing.assert_allclose(loaded.rank_logits(features, training=False).numpy(), expected, atol=1e-5)
    # A model saved now keeps its prepared columns through save and load.
    old.rank_logits(features, training=False)  # builds
    again = load_model(save_model(old, str(tmp_path / "new")))
    assert again.prepared_catalog is True
    np.testing.assert_array_equal(again.catalog_table.values["title_tokens"].numpy(),
                                  old.catalog_table.values["title_tokens"].numpy())
