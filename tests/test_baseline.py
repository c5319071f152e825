"""The ID-only two-tower baseline: training, config round trip, what it learns, its OOV row, evaluation keys."""

import numpy as np
import pytest
import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
from tfrec_video.data.schema import impressions_schema
from tfrec_video.data.tables import write_table
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.evaluation import evaluate
from tfrec_video.evaluation.metrics import auc
from tfrec_video.models import IdOnlyTwoTower, fit_id_only_baseline

from toy import toy_data

SCHEMA = impressions_schema(history_length=5)
# Small batches and a few more epochs than the defaults, which are sized for ~21k clicks: the toy has ~280.
FIT = dict(embedding_dim=8, epochs=10, batch_size=32, learning_rate=0.1, seed=0)
COLD = [f"v{i}" for i in range(50, 60)]  # held out of training: cold start


def _write(impressions, path):
    return write_table({k: impressions[k] for k in SCHEMA.names if k in impressions}, str(path), SCHEMA)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    catalog, impressions = toy_data()
    warm_rows = ~np.isin(impressions["video_id"], COLD)
    path = _write({k: v[warm_rows] for k, v in impressions.items()}, tmp_path_factory.mktemp("baseline") / "t.parquet")
    return catalog, impressions, warm_rows, fit_id_only_baseline(path, SCHEMA, **FIT)


def test_trains_on_clicks_with_vocabularies_from_every_training_row(trained):
    catalog, impressions, warm_rows, model = trained
    assert model.user_ids == sorted(set(impressions["user_id"][warm_rows]))
    assert model.video_ids == sorted(set(impressions["video_id"][warm_rows]))
    assert not set(COLD) & set(model.video_ids)
    assert model.query_feature_names == ("user_id",) and model.video_feature_names == ("video_id",)
    emb = model.embed_queries({"user_id": tf.constant(["u1", "u2"])})
    assert emb.shape == (2, FIT["embedding_dim"]) and np.isfinite(emb.numpy()).all()


def test_config_round_trip(trained):
    model = trained[3]
    again = IdOnlyTwoTower.from_config(model.get_config())
    assert again.get_config() == model.get_config()
    videos = {"video_id": tf.constant(["v0", "v7", "never-seen"])}
    users = {"user_id": tf.constant(["u0", "u3", "never-seen"])}
    again.embed_videos(videos), again.embed_queries(users)  # build
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.embed_videos(videos), model.embed_videos(videos))
    np.testing.assert_array_equal(again.embed_queries(users), model.embed_queries(users))


def test_ranks_clicked_topic_videos_above_others(trained):
    catalog, impressions, warm_rows, model = trained
    topic = np.array([int(c[1:]) for c in catalog["category"]])
    topic_of = dict(zip(catalog["video_id"], topic))
    clicked = impressions["clicked"].astype(bool) & warm_rows
    users = sorted(set(impressions["user_id"][clicked]))
    favourite = [np.bincount([topic_of[v] for v in impressions["video_id"][clicked & (impressions["user_id"] == u)]],
                             minlength=3).argmax() for u in users]
    warm = ~np.isin(catalog["video_id"], COLD)
    scores = (model.embed_queries({"user_id": tf.constant(users)}).numpy()
              @ model.embed_videos({"video_id": tf.constant(catalog["video_id"][warm])}).numpy().T)
    aucs = [auc(topic[warm] == f, s) for f, s in zip(favourite, scores)]
    assert np.mean(aucs) > 0.75, np.mean(aucs)  # chance is 0.5


def test_every_unseen_video_shares_the_single_oov_row(trained):
    model = trained[3]
    ids = tf.constant(COLD + ["never-seen", ""])
    assert model.video_index(ids).numpy().tolist() == [0] * len(COLD + ["never-seen", ""])
    emb = model.embed_videos({"video_id": ids}).numpy()
    np.testing.assert_array_equal(emb, np.repeat(emb[:1], len(emb), axis=0))  # the documented weakness
    known = model.embed_videos({"video_id": tf.constant(["v0", "v1"])}).numpy()
    assert model.video_index(tf.constant(["v0"])).numpy()[0] > 0 and not np.allclose(known[0], known[1])
    assert model.embed_queries({"user_id": tf.constant(["a-new-user"])}).shape == (1, FIT["embedding_dim"])


class _ScoreModel:
    """A stand-in main model: a two-tower's embeddings, and the sigmoid of its score as the click probability."""

    def __init__(self, tower):
        self.tower = tower
        self.video_feature_names = tower.video_feature_names

    def embed_videos(self, features, training=None):
        return self.tower.embed_videos(features, training=training)

    def __call__(self, features, training=None):
        out = self.tower(features, training=training)
        return {"query_embedding": out["query_embedding"], "click_probability": tf.sigmoid(out["retrieval_score"])}


def test_evaluate_adds_baseline_keys_to_the_three_sections(trained):
    catalog, impressions, warm_rows, model = trained
    test = tf.data.Dataset.from_tensor_slices(
        {k: impressions[k] for k in ("user_id", "video_id", "clicked")})
    args = dict(catalog=catalog, train_video_ids=impressions["video_id"][warm_rows], ks=(5, 50))
    plain = evaluate(_ScoreModel(model), test=test, **args)
    report = evaluate(_ScoreModel(model), test=test, baselines={"id_only": model}, **args)
    for section in ("retrieval", "cold_start", "warm_start"):
        added = {k: v for k, v in report[section].items() if k not in plain[section]}
        assert sorted(added) == ["id_only_ndcg@5", "id_only_ndcg@50", "id_only_recall@5", "id_only_recall@50"]
        # The main model's keys do not change; and the same embeddings give the same numbers, because the
        # model and the baselines go through one ranking code path.
        assert {k: v for k, v in report[section].items() if k in plain[section]} == plain[section]
        for key, value in added.items():
            assert value == pytest.approx(report[section][key[len("id_only_"):]], abs=1e-12), (section, key)
    assert report["cold_start"]["clicks"] > 0
    # The cold videos all tie on the OOV row (ties rank pessimistically), so none reaches the top 5.
    assert report["cold_start"]["id_only_recall@5"] == 0.0
    assert report["warm_start"]["id_only_recall@50"] > report["warm_start"]["id_only_recall@5"] > 0.0
    with pytest.raises(ValueError, match="baseline name"):
        evaluate(_ScoreModel(model), test=test, baselines={"oracle": model}, **args)


def test_bad_arguments_and_no_clicks(tmp_path):
    _, impressions = toy_data(n_rows=50)
    path = _write(impressions, tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="epochs"):
        fit_id_only_baseline(path, SCHEMA, epochs=0)
    path = _write(dict(impressions, clicked=np.zeros(50, np.int64)), tmp_path / "none.parquet")
    with pytest.raises(DataValidationError, match="no clicked row"):
        fit_id_only_baseline(path, SCHEMA)
