"""`adapt` records the data's shape, and `"auto"` fields of ModelConfig follow it."""

import numpy as np
import pytest

from tfrec_video.errors import ConfigError
from tfrec_video.features.vocabulary import Vocabularies, adapt
from tfrec_video.models.config import AUTO, ModelConfig
from tfrec_video.models.data_rules import resolve


def _catalog(media: bool):
    catalog = {"video_id": np.array(["a", "b", "c", "d"], object),
               "title": np.array(["cat video", "dog video", "cat toy", "bird song"], object)}
    if media:
        catalog["image_embedding"] = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    return catalog


IMPRESSIONS = {"user_id": np.array(["u1", "u1", "u1", "u2", "u2", "u3"], object),
               "video_id": np.array(["a", "b", "a", "a", "c", "a"], object),
               "clicked": np.array([1, 0, 1, 1, 0, 0]),
               "history": np.array([[""], ["a"], ["a"], [""], ["a"], [""]], object)}


def test_adapt_records_the_data_shape():
    shape = adapt(_catalog(media=True), IMPRESSIONS, title_vocabulary_size=40, media_components=2).data_shape
    assert shape["users"] == 3 and shape["videos"] == 3
    assert shape["median_user_impressions"] == 2.0 and shape["median_user_clicks"] == 1.0
    assert shape["median_video_impressions"] == 1.0          # a: 4, b: 1, c: 1
    assert shape["cold_catalog_share"] == 0.25               # d was never shown
    assert shape["click_rate"] == pytest.approx(0.5)
    assert shape["features"] == ["history", "image_embedding"]
    # It survives the vocabularies' JSON round trip, and vocabularies saved before it load without it.
    vocab = adapt(_catalog(media=False), IMPRESSIONS, title_vocabulary_size=40)
    assert Vocabularies.from_dict(vocab.to_dict()).data_shape == vocab.data_shape
    old = vocab.to_dict()
    del old["data_shape"]
    assert Vocabularies.from_dict(old).data_shape is None


def test_logq_weight_follows_whether_the_videos_have_media():
    with_media = adapt(_catalog(media=True), IMPRESSIONS, title_vocabulary_size=40, media_components=2)
    titles_only = adapt(_catalog(media=False), IMPRESSIONS, title_vocabulary_size=40)
    assert ModelConfig().logq_weight == AUTO
    config, decisions = resolve(ModelConfig(), with_media)
    assert config.logq_weight == 0.5 and decisions["logq_weight"]["value"] == 0.5
    config, decisions = resolve(ModelConfig(), titles_only)
    assert config.logq_weight == 1.0 and "no image or audio" in decisions["logq_weight"]["because"]
    # A hub image encoder is image content too; a number the user gives is never changed.
    assert resolve(ModelConfig(image_model="/some/encoder"), titles_only)[0].logq_weight == 0.5
    config, decisions = resolve(ModelConfig(logq_weight=0.2), titles_only)
    assert config.logq_weight == 0.2 and decisions == {}
    with pytest.raises(ConfigError, match="logq_weight must be in \\[0, 1\\] or 'auto'"):
        ModelConfig(logq_weight="full")


def test_the_model_is_built_from_the_resolved_config_and_saves_the_given_one():
    from tfrec_video.models.video_rec import VideoRecModel

    catalog = _catalog(media=False)
    vocab = adapt(catalog, IMPRESSIONS, title_vocabulary_size=40)
    model = VideoRecModel(ModelConfig(embedding_dim=8, title_vocabulary_size=40), vocab, catalog=catalog)
    assert model.config.logq_weight == 1.0 and model.data_rules["logq_weight"]["value"] == 1.0
    assert type(model.data_rules) is dict  # plain JSON for report.json, not a tracked wrapper
    assert model.get_config()["config"]["logq_weight"] == AUTO
