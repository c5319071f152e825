"""Tests of the built-in dataset's daily service (`BuiltinConfig.days`): the day column, one table a day,
new videos and users every day, drifting exposure, histories, the truth, and the default left unchanged."""

import argparse
import collections
import filecmp
import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from tfrec_video.cli.generate_data import add_cli
from tfrec_video.data import read_table_numpy
from tfrec_video.data.tables import table_columns
from tfrec_video.data.pipeline import impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.datasets.builtin import (
    BuiltinConfig,
    GroundTruth,
    benchmark_days,
    day_files,
    generate,
    load_manifest,
)
from tfrec_video.errors import ConfigError

DAY = 86400
SPLITS = ("train", "validation", "test")
IMP = impressions_schema(20)               # the splits: the columns of every dataset
IMP_DAY = impressions_schema(20, day=True)  # the day tables: and their day


def daily_config(**overrides):
    """An 8-day service, the last 3 days the benchmark; 300 videos and users (about 0.3 s to generate)."""
    fields = dict(days=3, window_days=8, n_videos=300, n_users=300, impressions_per_user=20.0,
                  test_fraction=0.375, validation_fraction=0.125, media_embeddings=False, n_media_videos=0)
    fields.update(overrides)
    return BuiltinConfig.tiny(**fields)


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("days") / "daily")
    generate(path, daily_config(), progress=False)
    m = load_manifest(path)
    cfg = BuiltinConfig.from_dict(m["config"])
    return {
        "path": path, "manifest": m, "config": cfg, "truth": GroundTruth.load(path),
        "days": [read_table_numpy(day_files(path, d), IMP_DAY) for d in range(cfg.window_days)],
        **{split: read_table_numpy(m["files"][split], IMP) for split in SPLITS},
    }


def _ids(table):
    return table["user_id"].astype(str), table["video_id"].astype(str)


def _rows(table):   # order-free (user, video, timestamp, clicked, history) tuples
    user, video = _ids(table)
    history = [tuple(h) for h in table["history"].tolist()]
    return sorted(zip(user, video, table["timestamp"].tolist(), table["clicked"].tolist(), history))


# -- the day column and the day tables ------------------------------------------------------------


def test_day_column_is_the_day_of_the_window(daily):
    cfg = daily["config"]
    assert cfg.benchmark_days == (5, 6, 7) == tuple(benchmark_days(daily["path"]))
    assert daily["manifest"]["days"]["benchmark_days"] == [5, 6, 7]
    for d, table in enumerate(daily["days"]):
        assert len(table["day"]) > 0 and (table["day"] == d).all(), d
        day_of_timestamp = np.minimum((table["timestamp"] - cfg.start_timestamp) // DAY, cfg.window_days - 1)
        np.testing.assert_array_equal(table["day"], day_of_timestamp)
    # The day tables hold exactly the rows of train + validation + test, which have no day column (they
    # stay readable with the default schema by every tool).
    every_day = sorted(r for table in daily["days"] for r in _rows(table))
    assert every_day == sorted(r for split in SPLITS for r in _rows(daily[split]))
    assert "day" not in daily["train"] and "day" not in table_columns(daily["manifest"]["files"]["test"])
    assert "day" in table_columns(day_files(daily["path"], 0))
    # The splits line up with the days here: test is the benchmark days, validation the day before.
    for split, days in (("test", {5, 6, 7}), ("validation", {4})):
        assert set(((daily[split]["timestamp"] - cfg.start_timestamp) // DAY).tolist()) == days


def test_day_files_ranges_and_errors(daily, tmp_path):
    path = daily["path"]
    per_day = daily["manifest"]["files"]["days"]
    assert day_files(path, 2, 4) == per_day[2] + per_day[3] + per_day[4]
    assert all(os.path.isabs(f) and os.path.exists(f) for f in day_files(path, 0, 7))
    assert all(f.startswith(os.path.join(path, "days", "003") + os.sep) for f in day_files(path, 3))
    n = sum(len(daily["days"][d]["user_id"]) for d in range(0, 5))
    assert len(read_table_numpy(day_files(path, 0, 4), IMP_DAY)["user_id"]) == n
    with pytest.raises(ValueError, match="first <= last"):
        day_files(path, 3, 8)
    plain = str(tmp_path / "plain")
    generate(plain, BuiltinConfig.tiny(n_media_videos=0), progress=False)
    with pytest.raises(ValueError, match="not a daily dataset"):
        day_files(plain, 0)


def test_a_day_reads_through_the_model_input_pipeline(daily):
    m = daily["manifest"]
    catalog = load_catalog(m["files"]["catalog"], catalog_schema())
    batch = next(iter(impressions_dataset(day_files(daily["path"], 6), catalog, IMP_DAY, batch_size=16)))
    assert (batch["day"].numpy() == 6).all() and batch["title"].shape == (16,)


# -- what arrives every day ----------------------------------------------------------------------


def test_new_videos_and_users_arrive_every_day(daily):
    cfg, truth = daily["config"], daily["truth"]
    seen_videos, seen_users = set(), set()
    for d, table in enumerate(daily["days"]):
        users, videos = map(set, _ids(table))
        if d > 0:
            assert videos - seen_videos, f"no video first shown on day {d}"
            assert users - seen_users, f"no user first active on day {d}"
        seen_videos |= videos
        seen_users |= users
        # Nobody is shown before their first-active day, no video before it is published.
        user_index = truth.user_index(table["user_id"])
        assert (truth.first_active_day[user_index] <= d).all()
        assert (truth.publish_time[truth.video_index(table["video_id"])] <= table["timestamp"]).all()
    per_day = daily["manifest"]["days"]["per_day"]
    assert all(n > 0 for n in per_day["videos_published"]) and all(n > 0 for n in per_day["users_arriving"][1:])
    assert per_day["impressions"] == [len(t["user_id"]) for t in daily["days"]]
    assert per_day["clicks"] == [int(t["clicked"].sum()) for t in daily["days"]]
    # A meaningful share of each day's impressions are of videos published that day or the day before.
    for d in range(1, cfg.window_days):
        age = d - (truth.publish_time[truth.video_index(daily["days"][d]["video_id"])] - cfg.start_timestamp) // DAY
        assert per_day["fresh_video_impressions"][d] == int((age <= 1).sum())
        assert per_day["fresh_video_impressions"][d] > 0.2 * per_day["impressions"][d], d
    # Cold-start videos are those published in the test period: in no train or validation row.
    cold = set(truth.video_ids[truth.cold_start])
    assert cold and not cold & (set(_ids(daily["train"])[1]) | set(_ids(daily["validation"])[1]))


def test_history_is_the_clicks_strictly_before_the_row(daily):
    L = daily["config"].history_length
    events = collections.defaultdict(list)
    for table in daily["days"]:
        for u, v, ts, c, h in zip(*_ids(table), table["timestamp"], table["clicked"], table["history"]):
            events[u].append((int(ts), v, int(c), [x.decode() if isinstance(x, bytes) else str(x) for x in h if x]))
    n_nonempty = 0
    for rows in events.values():
        rows.sort()
        assert len({ts for ts, *_ in rows}) == len(rows), "a user's timestamps must be distinct"
        clicked_before = []
        for ts, v, c, history in rows:
            assert history == clicked_before[::-1][:L]   # nothing at or after the row's own time
            n_nonempty += bool(history)
            if c:
                clicked_before.append(v)
    assert n_nonempty > 500


# -- drift --------------------------------------------------------------------------------------


def _topic_shares(path, days):
    truth, m = GroundTruth.load(path), load_manifest(path)
    out = []
    for d in days:
        videos = read_table_numpy(m["files"]["days"][d], IMP_DAY)["video_id"]
        counts = np.bincount(truth.dominant_topic[truth.video_index(videos)], minlength=truth.video_topics.shape[1])
        out.append(counts / counts.sum())
    return out


def test_popularity_drifts_from_day_to_day(daily, tmp_path):
    first, last = daily["days"][0], daily["days"][-1]
    top = [set(collections.Counter(_ids(t)[1]).most_common(10)) for t in (first, last)]
    assert not {v for v, _ in top[0]} & {v for v, _ in top[1]}, "the top videos of day 0 still lead on the last day"
    # Topic fashion: the topic mix of what is shown moves between the first and the last day with topic_drift,
    # much more than the sampling noise of the same config without it.
    moved = {}
    for drift in (0.0, 0.6):
        path = str(tmp_path / f"drift{drift}")
        generate(path, daily_config(topic_drift=drift, freshness_half_life_days=1000.0), progress=False)
        a, b = _topic_shares(path, (0, 7))
        moved[drift] = 0.5 * np.abs(a - b).sum()   # total variation distance
    assert moved[0.6] > 2 * moved[0.0] and moved[0.6] > 0.15, moved


# -- the truth ----------------------------------------------------------------------------------


def test_truth_of_each_day(daily):
    truth, cfg = daily["truth"], daily["config"]
    for d in (0, 6):
        table = daily["days"][d]
        np.testing.assert_array_equal(truth.day_clicked(d), table["clicked"])
        probs = truth.day_click_prob(d)
        assert probs.shape == table["clicked"].shape
        # The stored probabilities are the static click model's, row by row (in its context).
        n = 50
        again = truth.click_prob(table["user_id"][:n], table["video_id"][:n], hour=table["hour"][:n],
                                 device=table["device"][:n])
        np.testing.assert_allclose(np.diag(again), probs[:n], rtol=1e-5)
    oracle = daily["manifest"]["days"]["per_day"]["oracle_auc"]
    assert len(oracle) == cfg.window_days and all(0.6 < a < 1 for a in oracle)
    # A day outside the window is an error, not another day's truth (-1 would index the last day).
    for day in (-1, cfg.window_days):
        with pytest.raises(ValueError, match=f"day {day} is outside the window, days 0 to {cfg.window_days - 1}"):
            truth.day_click_prob(day)
    # The view a daily run is scored with: the day's truth as the test split's.
    np.testing.assert_array_equal(truth.with_test_day(6).test_click_prob(), truth.day_click_prob(6))
    assert truth.test_click_prob().shape == daily["test"]["clicked"].shape  # the original is untouched
    assert truth.params["days"]["topic_drift"] == cfg.topic_drift
    assert np.load(os.path.join(daily["path"], truth.params["days"]["topic_multiplier"])).shape == (8, cfg.n_topics)


# -- config, determinism, defaults, CLI --------------------------------------------------------


def test_default_config_is_unchanged():
    # Days change nothing of a config without them (its hash stays). DATASET_VERSION builtin-3 (watch time: new
    # columns in every dataset) moved these once, on purpose: cached datasets are generated again.
    assert BuiltinConfig().config_hash() == "fc091ef4de14"
    assert BuiltinConfig.tiny().config_hash() == "6df67e638cef"
    assert not {"days", "topic_drift", "freshness_half_life_days", "new_user_fraction"} & set(BuiltinConfig().to_dict())
    cfg = daily_config()
    assert cfg.to_dict()["days"] == 3 and BuiltinConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.config_hash() != daily_config(topic_drift=0.3).config_hash()


def test_without_days_no_day_column(tmp_path):
    path = str(tmp_path / "plain")
    generate(path, BuiltinConfig.tiny(n_media_videos=0), progress=False)
    m = load_manifest(path)
    assert "day" not in table_columns(m["files"]["train"]) and "days" not in m["schema"]
    assert "days" not in m and "days" not in m["files"] and not os.path.exists(os.path.join(path, "days"))
    assert "day" not in impressions_schema(20) and "day" in IMP_DAY


def test_same_seed_same_bytes_other_seed_differs(daily, tmp_path):
    again = str(tmp_path / "again")
    generate(again, daily_config(), progress=False)
    for root, _, files in os.walk(daily["path"]):
        for f in files:
            a = os.path.join(root, f)
            assert filecmp.cmp(a, os.path.join(again, os.path.relpath(a, daily["path"])), shallow=False), a
    other = str(tmp_path / "other")
    generate(other, daily_config(seed=1), progress=False)
    assert not filecmp.cmp(os.path.join(again, "days", "004", "part-00000.parquet"),
                           os.path.join(other, "days", "004", "part-00000.parquet"), shallow=False)


@pytest.mark.parametrize("overrides, field", [
    (dict(days=8), "days"), (dict(days=-1), "days"), (dict(days=1.5), "days"),
    (dict(days=0, topic_drift=0.3), "topic_drift"), (dict(days=2, topic_drift=-0.1), "topic_drift"),
    (dict(days=2, freshness_half_life_days=0), "freshness_half_life_days"),
    (dict(days=2, new_user_fraction=1.5), "new_user_fraction"),
])
def test_config_validation(overrides, field):
    with pytest.raises(ConfigError, match=f"BuiltinConfig.{field}"):
        BuiltinConfig(window_days=8, **overrides)


def test_daily_preset():
    cfg = BuiltinConfig.named("daily")
    assert cfg == BuiltinConfig.daily() and cfg.days == 6 and cfg.benchmark_days == tuple(range(6, 12))
    # The splits line up with the days: test is the benchmark days, validation the day before.
    assert cfg.split_timestamp == cfg.start_timestamp + 6 * DAY
    assert cfg.validation_timestamp == cfg.start_timestamp + 5 * DAY
    assert BuiltinConfig.named("daily", days=3).benchmark_days == (9, 10, 11)


def test_cli_days(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="tfrec-video")
    add_cli(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "cli")
    args = parser.parse_args(["generate-data", "--out", out, "--tiny", "--days", "4", "--no-progress"])
    assert args.func(args) == 0
    assert "Daily service: 56 days" in capsys.readouterr().out
    m = load_manifest(out)
    assert m["config"]["days"] == 4 and m["days"]["benchmark_days"] == [52, 53, 54, 55]
    args = parser.parse_args(["generate-data", "--out", str(tmp_path / "x"), "--tiny", "--daily"])
    assert args.func(args) == 2
    assert "--tiny and --daily" in capsys.readouterr().err


# -- watch time (issue 21) --------------------------------------------------------------------------------------


def test_watch_time_is_drawn_for_clicks_from_its_own_stream_with_an_exact_oracle(tmp_path):
    """A click's watch fraction follows its planted mean (`GroundTruth.watch_mean`), non-clicks watch nothing,
    and changing the watch model changes the watch columns only: every other column is drawn as before."""
    from tfrec_video.datasets.builtin.truth import GroundTruth

    schema = impressions_schema(20)
    tables = {}
    for name, options in (("base", {}), ("other", {"watch_quality_scale": 3.0, "watch_concentration": 2.0})):
        path = str(tmp_path / name)
        generate(path, BuiltinConfig.tiny(n_media_videos=0, **options), progress=False)
        tables[name] = (path, read_table_numpy(f"{path}/test", schema))
    path, test = tables["base"]
    clicked = test["clicked"] == 1
    fraction = test["watch_fraction"]
    assert clicked.sum() > 10 and (fraction[~clicked] == 0).all() and (test["watch_seconds"][~clicked] == 0).all()
    assert ((fraction[clicked] > 0) & (fraction[clicked] < 1)).all()
    truth = GroundTruth.load(path)
    mean = truth.test_watch_mean()
    assert len(mean) == len(fraction)
    assert np.corrcoef(fraction[clicked], mean[clicked])[0, 1] > 0.6
    # The oracle matrix agrees with the per-row truth.
    pairs = truth.watch_mean(test["user_id"][:5], test["video_id"][:5])
    np.testing.assert_allclose(np.diag(pairs), mean[:5], rtol=1e-5)
    # Watch appeal is not click appeal: the two true probabilities are far from the same ranking.
    assert np.corrcoef(truth.test_click_prob(), mean)[0, 1] < 0.7
    other = tables["other"][1]
    for column in ("user_id", "video_id", "clicked", "timestamp", "hour", "device"):
        np.testing.assert_array_equal(test[column], other[column])
    assert not np.array_equal(fraction, other["watch_fraction"])


def test_a_watch_config_is_checked():
    with pytest.raises(ValueError, match="watch_concentration must be a positive number"):
        BuiltinConfig.tiny(watch_concentration=0).validate()
    with pytest.raises(ValueError, match="watch_quality_scale must be a non-negative number"):
        BuiltinConfig.tiny(watch_quality_scale=-1.0).validate()
