"""`tfrec-video prepare` end to end: a raw log made from the built-in dataset's impressions, rebuilt.

The built-in generator writes each impression's `history` itself (the user's
clicks strictly before it, newest first, at most 20). A log of its impressions
without that column, prepared again, must give back the same history on every
row. A log that starts mid-window lacks the clicks before its start: there the
rebuilt history is the generator's history cut to the clicks inside the log
(its newest entries), which is exact for the rows whose history holds no older
click. Then `tfrec-video train` reads what `prepare` wrote.
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tfrec_video.cli import main
from tfrec_video.data.schema import impressions_schema
from tfrec_video.data.tables import read_table_numpy
from tfrec_video.datasets import BuiltinConfig
from tfrec_video.datasets.builtin import generate
from tfrec_video.preparation import PrepareConfig, SplitRule, prepare

LOG_COLUMNS = ("user_id", "video_id", "timestamp", "clicked", "hour", "device")
SCHEMA = impressions_schema(20)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """The tiny built-in dataset and all its impressions (train, validation, test) in time order."""
    root = str(tmp_path_factory.mktemp("builtin") / "tiny")
    generate(root, BuiltinConfig.tiny(n_media_videos=0), progress=False)
    parts = {s: read_table_numpy(f"{root}/{s}", SCHEMA) for s in ("train", "validation", "test")
             if os.path.isdir(f"{root}/{s}")}
    split = np.concatenate([[s] * len(p["user_id"]) for s, p in parts.items()])
    rows = {k: np.concatenate([p[k] for p in parts.values()]) for k in LOG_COLUMNS + ("history",)}
    rows["split"] = split
    order = np.argsort(rows["timestamp"], kind="stable")
    return root, {k: v[order] for k, v in rows.items()}


def _write_log(rows, directory, pieces=2, fmt="parquet", columns=LOG_COLUMNS):
    """The log in `pieces` files (Parquet in several row groups, or CSV), in time order."""
    os.makedirs(directory, exist_ok=True)
    n = len(rows["user_id"])
    bounds = np.linspace(0, n, pieces + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table({c: rows[c][a:b].tolist() for c in columns})
        if fmt == "parquet":
            pq.write_table(table, f"{directory}/events-{i}.parquet", row_group_size=300)
        else:
            pa_csv.write_csv(table, f"{directory}/events-{i}.csv")
    return f"{directory}/*.{fmt}"


def _read_out(out):
    got = {}
    for split in ("train", "validation", "test"):
        if not os.path.isdir(f"{out}/{split}"):
            continue
        t = read_table_numpy(f"{out}/{split}", SCHEMA)
        for u, v, ts, h, c in zip(t["user_id"], t["video_id"], t["timestamp"], t["history"], t["clicked"]):
            got[(u, v, int(ts))] = (split, [x for x in h if x], int(c))
    return got


def test_rebuilt_history_equals_the_generators_on_every_row(builtin, tmp_path):
    root, rows = builtin
    events = _write_log(rows, tmp_path / "log")
    test_from = int(rows["timestamp"][rows["split"] == "test"].min())
    report = prepare(PrepareConfig(events=events, catalog=f"{root}/catalog", out=str(tmp_path / "out"),
                                   split=SplitRule("time", test_from=test_from, validation_fraction=0.1)))
    got = _read_out(tmp_path / "out")
    n = len(rows["user_id"])
    assert len(got) == n == report["log"]["events"]
    for i in range(n):
        split, history, clicked = got[(rows["user_id"][i], rows["video_id"][i], int(rows["timestamp"][i]))]
        assert history == [x for x in rows["history"][i] if x], i
        assert clicked == rows["clicked"][i]
        # The generator's test split starts at the same time.
        assert (split == "test") == (rows["split"][i] == "test"), i
    assert report["splits"]["validation"]["rows"] > 0
    assert report["splits"]["test"]["rows"] == int((rows["split"] == "test").sum())


def test_a_log_that_starts_mid_window_rebuilds_the_clicks_inside_it(builtin, tmp_path):
    root, rows = builtin
    start = int(np.median(rows["timestamp"]))
    inside = rows["timestamp"] >= start
    late = {k: v[inside] for k, v in rows.items()}
    events = _write_log(late, tmp_path / "log", pieces=3)
    prepare(PrepareConfig(events=events, catalog=f"{root}/catalog", out=str(tmp_path / "out"),
                          split=SplitRule("leave-one-out")))
    got = _read_out(tmp_path / "out")
    clicked_at = {(u, v): int(t) for u, v, t, c in zip(rows["user_id"], rows["video_id"], rows["timestamp"],
                                                        rows["clicked"]) if c}
    exact = cut = 0
    for i in range(len(late["user_id"])):
        user = late["user_id"][i]
        _, history, _ = got[(user, late["video_id"][i], int(late["timestamp"][i]))]
        generated = [x for x in late["history"][i] if x]
        in_log = [v for v in generated if clicked_at[(user, v)] >= start]
        # Newest first: the clicks inside the log are the generator's newest entries.
        assert history == generated[:len(in_log)] == in_log, i
        if len(in_log) == len(generated):
            exact += 1
        else:
            cut += 1
    assert exact > 0 and cut > 0


def test_a_watch_log_gets_negatives_the_user_never_clicked(builtin, tmp_path):
    root, rows = builtin
    clicks = {k: v[rows["clicked"] == 1] for k, v in rows.items()}
    events = _write_log(clicks, tmp_path / "log", columns=("user_id", "video_id", "timestamp", "device"))
    report = prepare(PrepareConfig(events=events, catalog=f"{root}/catalog", out=str(tmp_path / "out"),
                                   split=SplitRule("leave-one-out"), negatives=3))
    positives = len(clicks["user_id"])
    splits = report["splits"]
    assert sum(s["positives"] for s in splits.values()) == positives
    assert sum(s["rows"] for s in splits.values()) == 4 * positives - report["log"]["negatives_short"]
    assert report["negatives_per_event"] == 3
    clicked_by = {}
    for u, v in zip(clicks["user_id"], clicks["video_id"]):
        clicked_by.setdefault(u, set()).add(v)
    table = read_table_numpy(str(tmp_path / "out" / "train"), SCHEMA)
    negatives = table["clicked"] == 0
    assert negatives.sum() > 0
    assert not any(v in clicked_by[u] for u, v in zip(table["user_id"][negatives], table["video_id"][negatives]))
    # Popularity sampling: only videos with a training positive are drawn.
    train_videos = set(table["video_id"][table["clicked"] == 1])
    test = read_table_numpy(str(tmp_path / "out" / "test"), SCHEMA)
    assert set(test["video_id"][test["clicked"] == 0]) <= train_videos


def test_a_user_with_very_many_events_is_capped_to_the_latest(builtin, tmp_path):
    root, rows = builtin
    videos = np.unique(rows["video_id"])
    heavy = 120_000
    rng = np.random.default_rng(0)
    log = {"user_id": np.array(["heavy"] * heavy + list(rows["user_id"]), object),
           "video_id": np.concatenate([rng.choice(videos, heavy), rows["video_id"]]),
           "timestamp": np.concatenate([np.arange(heavy, dtype=np.int64) + 1_700_000_000, rows["timestamp"]]),
           "clicked": np.concatenate([np.ones(heavy, np.int64), rows["clicked"]])}
    events = _write_log(log, tmp_path / "log", pieces=4, columns=("user_id", "video_id", "timestamp", "clicked"))
    report = prepare(PrepareConfig(events=events, catalog=f"{root}/catalog", out=str(tmp_path / "out"),
                                   split=SplitRule("leave-one-out"), max_events_per_user=500))
    assert report["log"]["dropped_over_cap"] == heavy - 500
    assert report["log"]["events"] == heavy + len(rows["user_id"])
    kept = [key for key in _read_out(tmp_path / "out") if key[0] == "heavy"]
    assert sorted(t for _, _, t in kept) == list(range(1_700_000_000 + heavy - 500, 1_700_000_000 + heavy))


@pytest.mark.slow
def test_prepare_then_train_on_the_command_line(builtin, tmp_path, capsys):
    root, rows = builtin
    events = _write_log(rows, tmp_path / "log", fmt="csv")
    out = str(tmp_path / "data")
    test_from = int(rows["timestamp"][rows["split"] == "test"].min())
    assert main(["prepare", "--events", events, "--catalog", f"{root}/catalog", "--out", out, "--split", "time",
                 "--test-from", str(test_from), "--validation-fraction", "0.1", "--format", "tfrecord",
                 "--direct_num_workers=2", "--direct_running_mode=multi_threading"]) == 0
    printed = capsys.readouterr().out
    assert f"prepared {out}: {len(rows['user_id'])} events of 120 users" in printed
    assert sorted(os.listdir(out)) == ["catalog", "prepare_report.json", "run_config.yaml", "test", "train",
                                       "validation"]
    assert all(name.endswith(".tfrecord") for name in os.listdir(f"{out}/train"))
    assert main(["train", "--config", f"{out}/run_config.yaml", "--output-dir", str(tmp_path / "run"),
                 "--epochs", "1", "--no-export", "--verbose", "0"]) == 0
    with open(tmp_path / "run" / "report.json") as handle:
        report = json.load(handle)
    assert 0.0 < report["ranking"]["auc"] < 1.0
    assert report["retrieval"]["recall@100"] > 0.0


def test_unknown_command_line_options_are_refused_outside_prepare(capsys):
    with pytest.raises(SystemExit):
        main(["generate-data", "--out", "x", "--direct_num_workers=2"])
    assert "unrecognized arguments: --direct_num_workers=2" in capsys.readouterr().err


def test_the_default_runner_is_in_process_and_never_beams_prism_switch(monkeypatch, tmp_path):
    """Beam's DirectRunner first tries Prism, a binary it downloads; the default must need no download."""
    from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

    from tfrec_video.preparation.runner import run_pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("SwitchingDirectRunner (which tries Prism first) was used")

    monkeypatch.setattr(SwitchingDirectRunner, "run_pipeline", refuse)
    seen = tmp_path / "seen.txt"

    def build(pipeline):
        import apache_beam as beam

        _ = pipeline | beam.Create([3, 4]) | beam.CombineGlobally(sum) | beam.Map(lambda s: seen.write_text(str(s)))

    assert run_pipeline(build, None, ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]) == \
        "DirectRunner"
    assert seen.read_text() == "7"


def test_an_option_neither_prepare_nor_beam_knows_is_refused_before_anything_is_written(builtin, tmp_path, capsys):
    root, rows = builtin
    events = _write_log(rows, tmp_path / "log")
    out = tmp_path / "out"
    assert main(["prepare", "--events", events, "--catalog", f"{root}/catalog", "--out", str(out),
                 "--split", "leave-one-out", "--shard_size", "10"]) == 2
    assert "unknown option(s) --shard_size" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))


def test_the_rows_do_not_depend_on_the_number_of_shards(builtin, tmp_path):
    """A shard is a bucket of users (crc32(user) % shards): more shards move rows between files, never change them."""
    root, rows = builtin
    events = _write_log(rows, tmp_path / "log", pieces=3)
    clicks = {k: v[rows["clicked"] == 1] for k, v in rows.items()}
    watch = _write_log(clicks, tmp_path / "watch", columns=("user_id", "video_id", "timestamp"))
    for name, log, cap in (("log", events, 7), ("watch", watch, 3)):
        tables = []
        for shards in (None, 7):
            out = tmp_path / f"{name}-{shards}"
            prepare(PrepareConfig(events=log, catalog=f"{root}/catalog", out=str(out), num_shards=shards,
                                  split=SplitRule("random", validation_fraction=0.1), max_events_per_user=cap))
            split_rows = {}
            for split in ("train", "validation", "test"):
                files = sorted(os.listdir(out / split))
                # A shard whose users have no row in a split has no file there.
                assert 1 <= len(files) <= (1 if shards is None else 7), files
                assert shards is None or split != "train" or len(files) == 7, files
                part = []
                for f in files:
                    t = read_table_numpy(str(out / split / f), SCHEMA)
                    keys = list(zip(t["user_id"], t["timestamp"].tolist()))
                    assert keys == sorted(keys, key=lambda k: k[0]), f  # by user, each user's rows in order
                    part += [(u, int(ts), v, int(c), tuple(h)) for u, ts, v, c, h in
                             zip(t["user_id"], t["timestamp"], t["video_id"], t["clicked"], t["history"])]
                split_rows[split] = sorted(part)
            tables.append(split_rows)
        assert tables[0] == tables[1], name
        assert sum(len(v) for v in tables[0].values()) > len(rows["user_id"]) // 3
