"""Content inside the model: the catalog table behind history pooling, PCA of media
embeddings, and raw media through a TF Hub model the test saves itself."""

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfrec_video.datasets.builtin.media import encode_image
from tfrec_video.errors import ConfigError
from tfrec_video.features import adapt, fit_pca
from tfrec_video.features.pca import project
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.serving.export import ServingModule
from tfrec_video.towers import CatalogTable, PrincipalComponents
from toy import SMALL, small_model, toy_data



@pytest.fixture(scope="module")
def data():
    return toy_data()


_model = small_model


# -- CatalogTable ---------------------------------------------------------------------------------

def _table():
    table = CatalogTable(3, {"title": ("string", []), "image_embedding": ("float32", [2])})
    table.set_catalog({"video_id": np.array(["a", "b", "c"], object),
                       "title": np.array(["cat", "dog", "猫"], object),
                       "image_embedding": np.arange(6, dtype=np.float32).reshape(3, 2)})
    return table


def test_catalog_table_looks_up_any_shape_and_defaults_unknown_ids():
    table = _table()
    out = table(tf.constant([["c", ""], ["zz", "a"]]))
    assert out["title"].numpy().tolist() == [["猫".encode(), b""], [b"", b"cat"]]
    np.testing.assert_array_equal(out["image_embedding"].numpy()[:, :, 0], [[4, 0], [0, 0]])
    assert out["video_id"].shape == (2, 2)


def test_catalog_table_state_travels_with_weights_and_checkpoints(tmp_path):
    table = _table()
    ids = tf.constant(["b", "a", "c", "x"])
    expected = table(ids)["image_embedding"].numpy()
    fresh = CatalogTable(**{k: v for k, v in table.get_config().items() if k in ("size", "columns")})
    assert fresh(ids)["image_embedding"].numpy().sum() == 0  # empty until filled
    fresh.set_weights(table.get_weights())
    np.testing.assert_array_equal(fresh(ids)["image_embedding"].numpy(), expected)
    path = tf.train.Checkpoint(table=table).save(str(tmp_path / "ckpt"))
    restored = CatalogTable(3, {"title": ("string", []), "image_embedding": ("float32", [2])})
    tf.train.Checkpoint(table=restored).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(restored(ids)["image_embedding"].numpy(), expected)


def test_catalog_table_rejects_a_catalog_of_the_wrong_size_or_shape():
    table = CatalogTable(2, {"image_embedding": ("float32", [2])})
    with pytest.raises(ValueError, match="expected a catalog of 2 videos"):
        table.set_catalog({"video_id": np.array(["a"], object), "image_embedding": np.zeros([1, 2], np.float32)})
    with pytest.raises(ValueError, match="image_embedding.*expected \\[2, 2\\]"):
        table.set_catalog({"video_id": np.array(["a", "b"], object), "image_embedding": np.zeros([2, 3], np.float32)})
    with pytest.raises(ValueError, match="duplicate video_id .a., also at the catalog, row 0"):
        table.set_catalog({"video_id": np.array(["a", "a"], object), "image_embedding": np.zeros([2, 2], np.float32)})


# -- history pooled over content ---------------------------------------------------------------------

def test_history_is_embedded_from_the_watched_videos_content(data):
    catalog, impressions = data
    model = _model(catalog, impressions)
    assert model.catalog_table is not None
    # Two copies of the catalog differing only in one video's content: the query of a user who
    # watched that video changes, though the query features themselves are identical.
    batch = {"user_id": tf.constant(["u1"]), "history": tf.constant([["v3", "", "", "", ""]]),
             "hour": tf.constant([5], tf.int64), "device": tf.constant(["tv"])}
    other = dict(batch, history=tf.constant([["v5", "", "", "", ""]]))
    before, other_before = model.embed_queries(batch).numpy(), model.embed_queries(other).numpy()
    changed = dict(catalog, title=catalog["title"].copy())
    changed["title"][3] = "football goal 足球"
    changed["image_embedding"] = catalog["image_embedding"].copy()
    changed["image_embedding"][3] *= -3.0
    model.fill_catalog_table(changed)  # the table holds the prepared columns too
    after = model.embed_queries(batch).numpy()
    assert np.abs(after - before).max() > 1e-3
    # A user who watched something else is unaffected.
    np.testing.assert_allclose(model.embed_queries(other).numpy(), other_before, atol=1e-6)


def test_history_content_needs_the_catalog_and_can_be_turned_off(data):
    catalog, impressions = data
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    with pytest.raises(ConfigError, match="catalog=catalog"):
        VideoRecModel(ModelConfig(**SMALL), vocab)
    model = VideoRecModel(ModelConfig(**SMALL, history_content=False), vocab)
    assert model.catalog_table is None
    out = model({k: v[:4] for k, v in impressions.items()})
    assert out["query_embedding"].shape == (4, 16)


def test_content_history_model_round_trips_and_exports(data, tmp_path):
    catalog, impressions = data
    model = _model(catalog, impressions, history_pooling="attention")
    model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(256), epochs=1, verbose=0)
    batch = {k: v[:6] for k, v in impressions.items()}
    expected = model(batch)["click_probability"].numpy()
    clone = VideoRecModel.from_config(model.get_config())
    clone(batch)
    clone.set_weights(model.get_weights())  # the catalog table travels with the weights
    np.testing.assert_allclose(clone(batch)["click_probability"].numpy(), expected, rtol=1e-5)
    # The exported graph resolves history ids to content by itself.
    module = ServingModule(model, catalog, k=5, n=3)
    tf.saved_model.save(module, str(tmp_path / "export"), signatures=module.signatures())
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    query = {n: tf.constant(batch[n]) for n in model.query_feature_names}
    np.testing.assert_allclose(loaded.signatures["embed_query"](**query)["query_embedding"].numpy(),
                               model.embed_queries(query).numpy(), atol=1e-5)


# -- PCA of media embeddings -------------------------------------------------------------------------

def test_fit_pca_whitens_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 10)) @ rng.normal(size=(10, 10)) + 3.0
    pca = fit_pca(x, 4)
    assert fit_pca(x, 4) == pca
    z = project(x, pca)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)
    components = np.asarray(pca["components"])
    np.testing.assert_allclose(components.T @ components, np.eye(4), atol=1e-5)
    # The top components carry the most variance.
    assert np.all(np.diff(pca["scale"]) <= 0)
    layer = PrincipalComponents(**pca)
    np.testing.assert_allclose(layer(tf.constant(x, tf.float32)).numpy(), z, atol=1e-3)
    assert fit_pca(x, 0) is None and fit_pca(x[:1], 3) is None
    assert np.asarray(fit_pca(x[:3], 8)["components"]).shape[1] <= 3  # capped by the rank


def test_media_components_zero_keeps_raw_embeddings(data):
    catalog, impressions = data
    with_pca = _model(catalog, impressions)
    raw = _model(catalog, impressions, media_components=0)
    assert with_pca.candidate_tower.image_pca.num_components == 8  # the toy image embedding is 8-d
    assert raw.candidate_tower.image_pca is None and raw.vocabularies.image_pca is None
    with pytest.raises(ConfigError, match="media_components"):
        ModelConfig(media_components=-1)


# -- raw media through hub.KerasLayer ---------------------------------------------------------------

COLOURS = np.array([[230, 40, 40], [40, 200, 60], [50, 60, 220]], np.uint8)


@pytest.fixture(scope="module")
def image_hub(tmp_path_factory):
    """A tiny image encoder in the TF Hub SavedModel format: mean colour @ W."""
    w = tf.Variable(np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32))
    obj = tf.train.Checkpoint()
    obj.variables = [w]
    obj.trainable_variables = [w]
    obj.__call__ = tf.function(lambda x: tf.reduce_mean(x, [1, 2]) @ w,
                               input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    path = str(tmp_path_factory.mktemp("hub") / "image_encoder")
    tf.saved_model.save(obj, path)
    return path


def _with_thumbnails(catalog, impressions):
    # Thumbnails coloured by topic (recovered from the toy category), so content predicts clicks.
    topic = np.array([int(c[1:]) for c in catalog["category"]])
    thumbs = np.array([encode_image(np.broadcast_to(COLOURS[t], (20, 20, 3)).copy()) for t in topic], object)
    catalog = {k: v for k, v in catalog.items() if k != "image_embedding"}
    catalog["thumbnail"] = thumbs
    index = {v: i for i, v in enumerate(catalog["video_id"])}
    impressions = {k: v for k, v in impressions.items() if k != "image_embedding"}
    impressions["thumbnail"] = thumbs[[index[v] for v in impressions["video_id"]]]
    return catalog, impressions


def test_raw_thumbnails_through_a_hub_model(data, image_hub, tmp_path):
    catalog, impressions = _with_thumbnails(*data)
    model = _model(catalog, impressions, image_model=image_hub)
    assert "thumbnail" in model.video_feature_names and "image_embedding" not in model.video_feature_names
    assert model.candidate_tower.image_encoder.trainable_weights == []  # frozen by default
    history = model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(128), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Two unseen videos with the same title but different thumbnails embed differently.
    videos = {"video_id": tf.constant(["new-1", "new-2"]), "title": tf.constant(["cat", "cat"]),
              "category": tf.constant(["c0", "c0"]), "duration_s": tf.constant([60.0, 60.0]),
              "audio_embedding": tf.zeros([2, 4]), "thumbnail": tf.constant([catalog["thumbnail"][0],
                                                                             encode_image(np.zeros((9, 9, 3), np.uint8))])}
    for name in ("category", "thumbnail"):  # the toy catalog has these columns
        assert name in model.video_feature_names
    emb = model.embed_videos(videos).numpy()
    assert np.abs(emb[0] - emb[1]).max() > 1e-3
    # Config round trip rebuilds the encoder from its handle.
    clone = VideoRecModel.from_config(model.get_config())
    batch = {k: v[:4] for k, v in impressions.items()}
    clone(batch)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch)["click_probability"].numpy(), model(batch)["click_probability"].numpy(),
                               rtol=1e-5)


def test_hub_model_fine_tunes_when_configured(data, image_hub):
    catalog, impressions = _with_thumbnails(*data)
    model = _model(catalog, impressions, image_model=image_hub, fine_tune_media=True)
    encoder = model.candidate_tower.image_encoder
    assert len(encoder.trainable_weights) == 1
    before = encoder.trainable_weights[0].numpy().copy()
    model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(128), epochs=1, verbose=0)
    assert np.abs(encoder.trainable_weights[0].numpy() - before).max() > 0


def test_hub_model_needs_raw_thumbnails(data, image_hub):
    catalog, impressions = data  # image_embedding but no thumbnail column
    with pytest.raises(ConfigError, match="thumbnail"):
        _model(catalog, impressions, image_model=image_hub)


def test_catalog_table_holds_only_the_same_catalog():
    from tfrec_video.towers import CatalogTable

    catalog = {"video_id": np.array(["a", "b", "c"], object), "title": np.array(["x", "y", "z"], object),
               "duration_s": np.array([1.0, 2.0, 3.0], np.float32)}
    table = CatalogTable(3, {"title": ("string", []), "duration_s": ("float32", [])})
    table.set_catalog(catalog)
    assert table.holds(catalog) and table.holds(catalog, chunk=2)
    for name, changed in (("video_id", ["a", "c", "b"]), ("title", ["x", "y", "w"]), ("duration_s", [1.0, 2.0, 3.5])):
        other = dict(catalog, **{name: np.array(changed, catalog[name].dtype)})
        assert not table.holds(other, chunk=2), name
    assert not table.holds({k: v[:2] for k, v in catalog.items()})
    assert not table.holds({k: v for k, v in catalog.items() if k != "title"})
    # Limited to some columns, only those are compared (and only those need be given).
    assert table.holds({k: v for k, v in catalog.items() if k != "title"}, columns=["duration_s"])
    assert not table.holds(dict(catalog, duration_s=np.array([1.0, 2.0, 3.5], np.float32)), columns=["duration_s"])


def test_vocabularies_and_configs_are_not_walked_by_keras_tracking(data):
    """Tracked lists of ids made every traversal of a 600k-id model take seconds (see towers/untracked)."""
    from tensorflow.python.trackable.data_structures import ListWrapper, _DictWrapper

    catalog, impressions = data
    model = _model(catalog, impressions)
    model.compile(tf.keras.optimizers.Adam())
    wrapped = []
    for layer in model._flatten_layers(include_self=True):
        for name, value in vars(layer).items():
            if isinstance(value, (ListWrapper, _DictWrapper)) and name in ("vocabulary", "_config", "input_vocabulary"):
                wrapped.append(f"{layer.name}.{name}")
    assert not wrapped
    assert type(model.video_embedding.vocabulary) is list and model.video_embedding.vocabulary
    # The configs still round-trip with their vocabularies.
    assert model.query_tower.get_config()["user_ids"] == list(model.vocabularies.user_ids)
