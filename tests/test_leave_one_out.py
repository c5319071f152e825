"""The leave-one-out protocol, the history-mean baseline and the sparse built-in regime."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfrec_video.datasets import BuiltinConfig
from tfrec_video.evaluation.leave_one_out import leave_one_out_events, leave_one_out_metrics
from tfrec_video.evaluation.report import format_table
from tfrec_video.models.history_mean import HistoryMeanTwoTower


def _impressions(rows):
    keys = ("user_id", "video_id", "clicked", "timestamp", "history")
    columns = {k: [r[i] for r in rows] for i, k in enumerate(keys)}
    return tf.data.Dataset.from_tensor_slices({
        "user_id": np.array(columns["user_id"], object), "video_id": np.array(columns["video_id"], object),
        "clicked": np.array(columns["clicked"], np.int64), "timestamp": np.array(columns["timestamp"], np.int64),
        "history": np.array(columns["history"], object)})


def test_events_are_each_users_last_click_by_time():
    test = _impressions([
        ("u1", "a", 1, 30, ["", ""]),
        ("u1", "b", 1, 50, ["a", ""]),   # u1's last click
        ("u1", "c", 0, 90, ["b", "a"]),  # later, but not clicked
        ("u2", "d", 1, 20, ["", ""]),    # u2's last click, though earlier in time than u1's
        ("u2", "e", 1, 10, ["", ""]),
        ("u3", "f", 0, 10, ["", ""]),    # no click: no event
    ])
    events = leave_one_out_events(test, ["history"], batch_size=2)
    assert [v.decode() for v in events["user_id"]] == ["u1", "u2"]
    assert [v.decode() for v in events["video_id"]] == ["b", "d"]
    assert [v.decode() for v in events["history"][0]] == ["a", ""]


class _FixedModel:
    """Queries and videos with fixed embeddings: user i's query is row i of `queries`."""

    query_feature_names = ("user_id",)
    video_feature_names = ("video_id",)

    def __init__(self, videos, queries):
        self.videos, self.queries = videos, queries

    def embed_queries(self, features, training=None):
        index = tf.strings.to_number(tf.strings.substr(features["user_id"], 1, 3), tf.int32)
        return tf.gather(tf.constant(self.queries, tf.float32), index)

    def embed_videos(self, features, training=None):
        index = tf.strings.to_number(tf.strings.substr(features["video_id"], 1, 3), tf.int32)
        return tf.gather(tf.constant(self.videos, tf.float32), index)


def test_metrics_rank_the_whole_catalog_with_the_history_left_out():
    catalog = {"video_id": np.array([f"v{i}" for i in range(5)], object)}
    # Scores of user 0: v4 > v3 > v2 > v1 > v0; user 1 likes v0 best.
    videos = np.arange(5, dtype=np.float32)[:, None]
    model = _FixedModel(videos, np.array([[1.0], [-1.0], [1.0], [1.0]], np.float32))
    events = {
        "user_id": np.array(["u0", "u1", "u2", "u3"], object),
        "video_id": np.array(["v2", "v0", "v3", "v9"], object),
        # u0 watched v4 and v3: v2 is then first. u2 re-watches v3 (skipped); v9 is not in the catalog.
        "history": np.array([["v4", "v3"], ["", ""], ["v3", ""], ["", ""]], object),
    }
    section = leave_one_out_metrics(model, catalog, events, train_video_ids=["v0", "v1", "v3", "v4"], ks=(1, 2))
    assert section["protocol"] == "leave_one_out"
    assert section["events"] == 2 and section["repeat_clicks_skipped"] == 1
    assert section["unknown_videos_skipped"] == 1
    # u0: rank 0 once v4 and v3 are removed (rank 2 without the rule); u1: rank 0.
    assert section["hr@1"] == 1.0 and section["ndcg@2"] == 1.0
    assert section["cold_events"] == 1 and section["cold_hr@1"] == 1.0  # v2 is not a training video
    assert section["list"] == "retrieval"
    # Popularity (v0 most popular) and a baseline are scored on the same events, by the same rule.
    other = _FixedModel(np.array([[0.0], [5], [3], [2], [4]], np.float32), model.queries)
    section = leave_one_out_metrics(model, catalog, events, ["v0"], baselines={"other": other},
                                    popularity=np.array([5.0, 4, 3, 2, 1]), ks=(1, 2))
    assert section["popularity_hr@2"] == 0.5     # u1's v0 is first; u0's v2 is third
    # The baseline ranks u0's v2 second (v1 above it, v4 and v3 removed) and u1's v0 first.
    assert section["other_hr@1"] == 0.5 and section["other_hr@2"] == 1.0
    assert section["other_ndcg@2"] == pytest.approx((1.0 + 1.0 / math.log2(3)) / 2)


def test_served_list_ranks_come_from_its_positions():
    catalog = {"video_id": np.array([f"v{i}" for i in range(4)], object)}
    model = _FixedModel(np.arange(4, dtype=np.float32)[:, None], np.ones((2, 1), np.float32))
    events = {"user_id": np.array(["u0", "u1"], object), "video_id": np.array(["v1", "v0"], object),
              "history": np.array([[""], [""]], object)}

    def lists(features):
        served = np.array([[2, 1, 3], [3, 2, 1]])[: len(features["user_id"])]
        return served, served

    section = leave_one_out_metrics(model, catalog, events, ["v0", "v1"], served_lists_fn=lists, ks=(1, 2, 3, 4))
    assert section["list"] == "served" and section["served_n"] == 3
    assert section["hr@4"] is None and section["ndcg@4"] is None  # longer than the list: undefined
    assert section["retrieval_hr@4"] == 1.0
    assert (section["hr@1"], section["hr@2"], section["hr@3"]) == (0.0, 0.5, 0.5)  # v0 is not in u1's list
    assert section["retrieval_hr@3"] == 0.5  # retrieval ranks v1 third of four and v0 last


def test_format_table_adds_the_leave_one_out_rows():
    table = format_table({"leave_one_out": {"protocol": "leave_one_out", "hr@10": 0.125, "history_mean_hr@10": 0.1}})
    # The name column widens to the longest name (32 characters at least), so every value lines up.
    assert "leave_one_out.hr@10                   0.1250" in table
    assert "leave_one_out.history_mean_hr@10      0.1000" in table
    assert len({len(line) for line in table.splitlines()}) == 1


def test_history_mean_tower_averages_the_watched_videos():
    model = HistoryMeanTwoTower(["a", "b", "c"], embedding_dim=4, seed=3)
    model.embed_videos({"video_id": tf.constant(["a"])})  # builds the table
    table = model.embedding.embeddings.numpy()
    index = {v: i for i, v in enumerate(model.lookup.get_vocabulary())}
    q = model.embed_queries({"history": tf.constant([["a", "c", ""], ["", "", ""], ["zzz", "", ""]])}).numpy()
    np.testing.assert_allclose(q[0], (table[index["a"]] + table[index["c"]]) / 2, rtol=1e-6)
    np.testing.assert_allclose(q[1], 0.0)                       # an empty history: the zero vector
    np.testing.assert_allclose(q[2], table[index["[UNK]"]], rtol=1e-6)  # an unknown video: the OOV row
    clone = HistoryMeanTwoTower.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_history_mean_baseline_learns_and_keeps_its_best_validation_epoch(tmp_path):
    from tfrec_video.data.pipeline import builtin_splits
    from tfrec_video.data.schema import impressions_schema
    from tfrec_video.datasets import ensure_builtin
    from tfrec_video.models.history_mean import fit_history_mean_baseline

    cfg = BuiltinConfig.tiny()
    splits = builtin_splits(ensure_builtin(str(tmp_path), cfg, progress=False))
    schema = impressions_schema(cfg.history_length)
    model = fit_history_mean_baseline(splits["train"], schema, splits["validation"], max_epochs=3, patience=1)
    assert 1 <= model.best_epoch <= 3
    untrained = HistoryMeanTwoTower(model.video_ids, seed=0)
    from tfrec_video.data.tables import read_table

    events = leave_one_out_events(read_table(splits["test"], schema, validate=False), ["history"])
    catalog = {"video_id": np.array(model.video_ids, object)}
    trained = leave_one_out_metrics(model, catalog, events, model.video_ids, ks=(20,))["hr@20"]
    chance = leave_one_out_metrics(untrained, catalog, events, model.video_ids, ks=(20,))["hr@20"]
    assert trained > chance + 0.05
    with pytest.raises(ValueError, match="max_epochs must be a positive integer"):
        fit_history_mean_baseline(splits["train"], schema, max_epochs=0)


def test_sparse_regime_has_the_documented_shape(tmp_path):
    from tfrec_video.datasets import generate

    # The sparse regime's per-user shape at an eighth of its users: the shape does not depend on the count.
    cfg = BuiltinConfig.sparse(n_users=3000, n_videos=2000)
    assert BuiltinConfig.named("sparse") == BuiltinConfig.sparse()
    assert BuiltinConfig.from_dict(cfg.to_dict()) == cfg
    manifest = generate(str(tmp_path / "sparse"), cfg, progress=False)
    assert 0.4 < manifest["ctr"]["overall"] < 0.6          # about as many clicks as non-clicks
    assert manifest["counts"]["media_videos"] == 0
    import pyarrow.parquet as pq

    catalog = pq.read_table(str(tmp_path / "sparse" / manifest["files"]["catalog"][0]))
    assert set(catalog.column_names) == {"video_id", "title", "category", "duration_s"}  # titles only
    users, clicks = [], []
    for split in ("train", "validation", "test"):
        for name in manifest["files"][split]:
            table = pq.read_table(str(tmp_path / "sparse" / name), columns=["user_id", "clicked"])
            users.append(table["user_id"].to_numpy(zero_copy_only=False))
            clicks.append(table["clicked"].to_numpy())
    _, inverse = np.unique(np.concatenate(users), return_inverse=True)
    per_user = np.bincount(inverse, weights=np.concatenate(clicks))
    assert 5 <= np.median(per_user) <= 7
    assert np.quantile(per_user, 0.9) >= 2 * np.median(per_user)  # a long tail of heavy users
    with pytest.raises(ValueError, match="media_embeddings must be True or False"):
        BuiltinConfig(media_embeddings="no")
    with pytest.raises(ValueError, match="one of"):
        BuiltinConfig.named("huge")
