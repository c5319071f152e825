"""Events/s and peak memory of `tfrec-video prepare` (Beam, in-process) against a numpy/pyarrow reference.

Method, per log size N (1M and 10M events by default; `--quick`: 100k only):

1. A seeded synthetic event log of N events (`synthetic_log`): N/40 users whose
   activity is lognormal (sigma 1.5: a few users have thousands of events, most
   a handful), N/100 videos (at least 1,000) whose popularity follows a Zipf law
   (exponent 1.05, ranks shuffled over the ids), timestamps uniform over 30 days
   from 2026-10-01 (whole seconds, so a busy user has a few events at the same
   second), `clicked` at 10 %, `hour` (the UTC hour) and `device` (4 values).
   The log is in time order, written as max(4, N/1M) Parquet files in row
   groups of 100k rows (the chunks the pipeline reads), with a catalog of the
   videos (`video_id`, `title`) written by `write_table`.
2. **beam**: `prepare(PrepareConfig(...))` with the default pipeline options
   (`DirectRunner`: Beam's in-process runner, one worker) and the default
   config (a shard per bucket of about 100k events, Parquet, the log's non-clicks as negatives), split
   `--split` (default `time`: test from day 28, the last 5 % of the training
   period as validation; or `leave-one-out`).
3. **reference** (`reference_prepare`, in this file only): the same tables
   built in one process with pyarrow and numpy: read the log, check it (ids
   non-empty, videos in the catalog, clicked 0/1, hour 0-23), sort by (user,
   timestamp, input order), cap each user at `max_events_per_user`, each row's
   history = the user's clicked videos strictly before the row's timestamp,
   newest first, at most `--history-length` (a vectorised gather, no loop over
   rows or users), the same split, the same shards (crc32 of the user) sorted
   by user, written with `tfrec_video.data.tables.write_table`, and the catalog
   copied as `prepare` copies it. No report is written (the pipeline's
   statistics are extra work the reference does not do).
4. Each run is a fresh child process (this script's `--one beam|reference`);
   its peak RSS is `ru_maxrss` of that child alone (`os.wait4`), so one run's
   memory never counts in the other's. Seconds are those of the `prepare` (or
   reference) call inside the child, imports excluded (`child_s` includes them;
   `child_cpu_s` is the child's user + system CPU seconds, which other jobs on
   the machine disturb less than wall time). GB = 10^9 bytes.
5. The two outputs must be the same: every split's files, compared file by file
   as Arrow tables (same rows, same order, same histories), at every size up to
   `--verify-up-to` (1M). A mismatch fails the run.
6. When Beam's events/s are below the reference's (`--profile auto`), the
   smallest size's Beam run is run again under cProfile in a child, and the top
   25 functions by cumulative time (and the top 15 by own time) are printed.

ratio = Beam events/s / reference events/s at the largest size run; target >= 0.25
(issue 20). Memory target: the Beam run of 10M events peaks at <= 8 GB
(`memory_met`; null when no size of 10M or more ran).

    python benchmarks/prepare.py [--quick] [--events 1000000 10000000] [--history-length 20]
                                 [--split time|leave-one-out] [--out-dir DIR] [--json]

`--json` prints only the final JSON line on stdout (the rest goes to stderr).
Otherwise the last line printed is JSON.
"""

import argparse
import cProfile
import datetime
import importlib
import io
import json
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TARGET = 0.25
MEMORY_TARGET_GB = 8.0
MEMORY_SIZE = 10_000_000  # The memory target is for the run of this many events (or more).
START = int(datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc).timestamp())
DAYS = 30
TEST_DAY = 27  # --split time: test from 2026-10-28.
VALIDATION_FRACTION = 0.05
DEVICES = ("phone", "tv", "desktop", "tablet")
ROW_GROUP = 100_000
SPLITS = ("train", "validation", "test")
LOG_COLUMNS = ("user_id", "video_id", "timestamp", "clicked", "hour", "device")
ROW_BITS = 40  # As tfrec_video.preparation.events: an event's order is (file index << 40) + row.
MAX_EVENTS_PER_USER = 100_000  # PrepareConfig's default.


def log(*args):
    print(*args, file=sys.stderr if _QUIET else sys.stdout, flush=True)


_QUIET = False


# --------------------------------------------------------------------------
# The synthetic log.
# --------------------------------------------------------------------------


def synthetic_log(n, directory, seed=0):
    """Writes N events as Parquet files to `directory/events` and the catalog to `directory/catalog`.

    Returns `{"events": glob, "catalog": dir, "users": ..., "videos": ..., "files": ..., "max_user_events": ...}`.
    """
    from tfrec_video.data.schema import catalog_schema
    from tfrec_video.data.tables import write_table

    rng = np.random.default_rng(seed)
    n_users = max(100, n // 40)
    n_videos = max(1000, n // 100)
    activity = rng.lognormal(0.0, 1.5, n_users)
    users = np.searchsorted(np.cumsum(activity / activity.sum()), rng.random(n), side="right")
    users = np.minimum(users, n_users - 1).astype(np.int32)
    popularity = 1.0 / np.arange(1, n_videos + 1) ** 1.05
    ranks = np.minimum(np.searchsorted(np.cumsum(popularity / popularity.sum()), rng.random(n), side="right"),
                       n_videos - 1)
    videos = rng.permutation(n_videos).astype(np.int32)[ranks]
    del ranks
    timestamps = START + rng.integers(0, DAYS * 86400, n)
    clicked = (rng.random(n) < 0.1).astype(np.int8)
    device = rng.choice(len(DEVICES), n, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int32)
    order = np.argsort(timestamps, kind="stable")  # A log in time order, as services write them.
    users, videos, timestamps, clicked, device = (a[order] for a in (users, videos, timestamps, clicked, device))
    del order
    hour = ((timestamps // 3600) % 24).astype(np.int8)
    user_names = pa.array([f"u{i}" for i in range(n_users)], pa.string())
    video_names = [f"v{i}" for i in range(n_videos)]
    video_array = pa.array(video_names, pa.string())
    device_array = pa.array(DEVICES, pa.string())

    events = os.path.join(directory, "events")
    os.makedirs(events, exist_ok=True)
    files = max(4, math.ceil(n / 1_000_000))
    bounds = np.linspace(0, n, files + 1).astype(np.int64)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table({
            "user_id": user_names.take(pa.array(users[a:b])),
            "video_id": video_array.take(pa.array(videos[a:b])),
            "timestamp": pa.array(timestamps[a:b], pa.int64()),
            "clicked": pa.array(clicked[a:b], pa.int8()),
            "hour": pa.array(hour[a:b], pa.int8()),
            "device": device_array.take(pa.array(device[a:b])),
        })
        pq.write_table(table, os.path.join(events, f"events-{i:04d}.parquet"), row_group_size=ROW_GROUP)
    catalog = os.path.join(directory, "catalog")
    write_table({"video_id": video_names, "title": [f"video {i} title" for i in range(n_videos)]},
                os.path.join(catalog, "part-00000.parquet"), catalog_schema())
    per_user = np.bincount(users, minlength=n_users)
    pairs = np.sort(users.astype(np.int64) * (DAYS * 86400) + (timestamps - START))
    tied = np.r_[pairs[1:] == pairs[:-1], False] | np.r_[False, pairs[1:] == pairs[:-1]]
    return {"events": os.path.join(events, "*.parquet"), "catalog": catalog, "users": int((per_user > 0).sum()),
            "videos": int(len(np.unique(videos))), "files": files, "max_user_events": int(per_user.max()),
            "click_rate": round(float(clicked.mean()), 4),
            "same_second_events": int(tied.sum())}  # Events sharing their user and second with another.


def split_rule(kind):
    from tfrec_video.preparation import SplitRule

    if kind == "time":
        return SplitRule("time", test_from=START + TEST_DAY * 86400, validation_fraction=VALIDATION_FRACTION)
    return SplitRule(kind)


# --------------------------------------------------------------------------
# The reference: the same tables, single process, numpy and pyarrow.
# --------------------------------------------------------------------------


def _codes(column):
    """`(codes int64, dictionary object array)` of a string column, the dictionary in sorted (str) order."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    dictionary = encoded.dictionary
    sort = np.asarray(pc.sort_indices(dictionary))  # UTF-8 byte order = Python's str order.
    rank = np.empty(len(sort), np.int64)
    rank[sort] = np.arange(len(sort))
    codes = rank[np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)]
    return codes, np.asarray(dictionary.take(pa.array(sort)).to_numpy(zero_copy_only=False), dtype=object)


def _fail(message):
    raise ValueError(f"reference: {message}")


def reference_prepare(events, catalog, out, history_length=20, split="time", num_shards=None,
                      max_events=MAX_EVENTS_PER_USER):
    """The pipeline's tables for a log with `clicked` (see the module docstring). Returns rows per split."""
    from tfrec_video.data.files import list_files
    from tfrec_video.data.schema import catalog_schema, impressions_schema
    from tfrec_video.data.tables import read_table_numpy, write_table
    from tfrec_video.preparation.buckets import bucket_count
    from tfrec_video.preparation.splits import TEST, VALIDATION

    rule = split_rule(split)
    files = list_files(events)
    tables, orders = [], []
    for index, path in enumerate(files):
        table = pq.read_table(path, columns=list(LOG_COLUMNS))
        tables.append(table)
        orders.append((np.int64(index) << ROW_BITS) + np.arange(table.num_rows, dtype=np.int64))
    table = pa.concat_tables(tables)
    del tables
    # PrepareConfig's default: a shard per bucket of users, about one per EVENTS_PER_BUCKET events.
    num_shards = num_shards or bucket_count(table.num_rows)
    order = np.concatenate(orders)
    del orders

    catalog_columns = read_table_numpy(catalog, catalog_schema())
    write_table(catalog_columns, os.path.join(out, "catalog", "part-00000.parquet"), catalog_schema())
    for name in ("user_id", "video_id"):
        if pc.any(pc.fill_null(pc.equal(table[name], ""), True)).as_py():
            _fail(f"a missing or empty {name}")
    if not pc.all(pc.is_in(table["video_id"], value_set=pa.array(catalog_columns["video_id"].tolist()))).as_py():
        _fail("a video not in the catalog")
    if table["timestamp"].null_count:
        _fail("a missing timestamp")
    timestamps = table["timestamp"].to_numpy().astype(np.int64)
    clicked = table["clicked"].to_numpy().astype(np.int8)
    hour = table["hour"].to_numpy().astype(np.int8)
    if ((clicked != 0) & (clicked != 1)).any() or ((hour < 0) | (hour > 23)).any():
        _fail("a clicked outside 0/1 or an hour outside 0-23")
    first_timestamp = int(timestamps.min())
    users, user_names = _codes(table["user_id"])
    videos, video_names = _codes(table["video_id"])
    devices, device_names = _codes(pc.fill_null(table["device"], ""))
    del table

    # Sort by (user, timestamp, input order).
    sort = np.lexsort((order, timestamps, users))
    users, videos, devices, timestamps, clicked, hour = (
        a[sort] for a in (users, videos, devices, timestamps, clicked, hour))
    del sort, order
    n = len(users)
    index = np.arange(n)

    def user_bounds(users):
        new = np.r_[True, users[1:] != users[:-1]]
        start = np.maximum.accumulate(np.where(new, np.arange(len(users)), 0))
        ends = np.r_[np.flatnonzero(new)[1:], len(users)]
        end = ends[np.cumsum(new) - 1]  # One past the user's last row.
        return new, start, end

    new_user, user_start, user_end = user_bounds(users)
    if max_events is not None and (user_end - user_start).max() > max_events:
        keep = (user_end - 1 - index) < max_events  # A user's latest `max_events` events.
        users, videos, devices, timestamps, clicked, hour = (
            a[keep] for a in (users, videos, devices, timestamps, clicked, hour))
        n = len(users)
        index = np.arange(n)
        new_user, user_start, user_end = user_bounds(users)

    # Runs of equal (user, timestamp) see the same history: the user's clicks before the run's first row.
    new_run = new_user | np.r_[True, timestamps[1:] != timestamps[:-1]]
    run_start = np.maximum.accumulate(np.where(new_run, index, 0))
    clicks_before = np.r_[0, np.cumsum(clicked, dtype=np.int64)[:-1]]  # Clicks at rows < i, over all users.
    newest = clicks_before[run_start]  # One past the last click a row's history may hold (in `clicked_rows`).
    oldest = clicks_before[user_start]  # The user's first click.
    clicked_videos = np.r_[videos[clicked == 1], -1]
    del clicks_before, run_start, new_run

    split_of = np.zeros(n, np.int8)
    if rule.kind == "time":
        validation_from = rule.validation_from(first_timestamp)
        if validation_from is not None:
            split_of[timestamps >= validation_from] = VALIDATION
        split_of[timestamps >= rule.test_seconds] = TEST
    elif rule.kind == "leave-one-out":
        size, from_end = user_end - user_start, user_end - 1 - index
        split_of[(from_end == 1) & (size >= 3)] = VALIDATION
        split_of[(from_end == 0) & (size >= 2)] = TEST
    else:
        _fail(f"split {rule.kind!r} is not in the reference")
    user_shard = np.array([zlib.crc32(u.encode("utf-8")) % num_shards for u in user_names.tolist()], np.int64)
    shard_of = user_shard[users]
    names_or_empty = np.r_[video_names, np.array([""], object)]  # Code -1: the padding.
    steps = np.arange(1, history_length + 1)
    schema = impressions_schema(history_length)
    rows = {}
    for s, name in enumerate(SPLITS):
        in_split = split_of == s
        rows[name] = int(in_split.sum())
        for shard in range(num_shards):
            take = np.flatnonzero(in_split & (shard_of == shard))
            if not take.size:
                continue
            position = newest[take, None] - steps[None, :]  # Newest first.
            valid = position >= oldest[take, None]
            history = names_or_empty[np.where(valid, clicked_videos[np.where(valid, position, -1)], -1)]
            write_table({"user_id": user_names[users[take]], "history": history, "hour": hour[take],
                         "video_id": video_names[videos[take]], "clicked": clicked[take],
                         "timestamp": timestamps[take], "device": device_names[devices[take]]},
                        os.path.join(out, name, f"part-{shard:05d}-of-{num_shards:05d}.parquet"), schema)
            del position, valid, history
    return rows


# --------------------------------------------------------------------------
# One run, in a child process.
# --------------------------------------------------------------------------


def run_one(args):
    """`--one beam|reference`: one run; its seconds and row counts go to `--result` as JSON."""
    from tfrec_video.preparation import PrepareConfig, prepare

    profile = cProfile.Profile() if args.profile_run else None
    start = time.perf_counter()
    if profile:
        profile.enable()
    if args.one == "beam":
        report = prepare(PrepareConfig(events=args.log, catalog=args.catalog, out=args.out, split=split_rule(args.split),
                                       history_length=args.history_length))
        rows = {name: report["splits"][name]["rows"] for name in SPLITS}
    else:
        os.makedirs(args.out, exist_ok=True)
        rows = reference_prepare(args.log, args.catalog, args.out, args.history_length, args.split)
    seconds = time.perf_counter() - start
    if profile:
        profile.disable()
        for key, top in (("cumulative", 25), ("tottime", 15)):
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats(key).print_stats(top)
            lines = text.getvalue().splitlines()
            body = lines[next(i for i, line in enumerate(lines) if "ncalls" in line) - 1:]
            print(f"# cProfile of the {args.one} run, top {top} by {key} ({seconds:.1f}s under the profiler):",
                  file=sys.stderr)
            print("\n".join(line.rstrip() for line in body if line.strip()), file=sys.stderr, flush=True)
    with open(args.result, "w", encoding="utf-8") as f:
        json.dump({"seconds": seconds, "rows": rows}, f)


def child(kind, data, out, args, result, profile=False):
    """Runs `--one kind` in a fresh process: `{seconds, rows, child_s, peak_rss_gb}`."""
    command = [sys.executable, os.path.abspath(__file__), "--one", kind, "--log", data["events"],
               "--catalog", data["catalog"], "--out", out, "--result", result,
               "--history-length", str(args.history_length), "--split", args.split]
    if profile:
        command.append("--profile-run")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=sys.stderr if _QUIET else None)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"the {kind} run failed (exit {process.returncode}): {' '.join(command)}")
    with open(result, encoding="utf-8") as f:
        done = json.load(f)
    done["child_s"] = time.perf_counter() - start
    done["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # Linux: kB.
    done["cpu_s"] = usage.ru_utime + usage.ru_stime  # The whole child's, imports included.
    return done


# --------------------------------------------------------------------------
# The comparison.
# --------------------------------------------------------------------------


def compare(beam_out, reference_out):
    """`(same, details)`: every split's (and the catalog's) files equal, file by file, as Arrow tables."""
    details = {"files": 0, "rows": 0, "mismatches": []}
    for name in ("catalog",) + SPLITS:
        a_dir, b_dir = os.path.join(beam_out, name), os.path.join(reference_out, name)
        a_files = sorted(os.listdir(a_dir)) if os.path.isdir(a_dir) else []
        b_files = sorted(os.listdir(b_dir)) if os.path.isdir(b_dir) else []
        if a_files != b_files:
            details["mismatches"].append(f"{name}: files {a_files} (beam) != {b_files} (reference)")
            continue
        for file in a_files:
            a, b = pq.read_table(os.path.join(a_dir, file)), pq.read_table(os.path.join(b_dir, file))
            details["files"] += 1
            details["rows"] += a.num_rows
            if a.equals(b):
                continue
            if a.num_rows != b.num_rows or a.column_names != b.column_names:
                details["mismatches"].append(f"{name}/{file}: {a.num_rows} rows {a.column_names} (beam) != "
                                             f"{b.num_rows} rows {b.column_names} (reference)")
                continue
            for column in a.column_names:
                x, y = a[column].to_pylist(), b[column].to_pylist()
                bad = [i for i, (p, q) in enumerate(zip(x, y)) if p != q]
                if bad:
                    details["mismatches"].append(
                        f"{name}/{file} {column}: {len(bad)} rows differ, first row {bad[0]}: "
                        f"{x[bad[0]]!r} (beam) != {y[bad[0]]!r} (reference)")
    return not details["mismatches"], details


# --------------------------------------------------------------------------


def bench_size(n, args, root):
    directory = os.path.join(root, f"n{n}")
    start = time.perf_counter()
    data = synthetic_log(n, os.path.join(directory, "log"), seed=args.seed)
    generate_s = time.perf_counter() - start
    log(f"# {n} events: {data['users']} users (most active {data['max_user_events']} events), {data['videos']} "
        f"videos, {data['files']} files, click rate {data['click_rate']}, {data['same_second_events']} events at the "
        f"same second as another of their user; generated in {generate_s:.1f}s")
    outs = {kind: os.path.join(directory, f"out-{kind}") for kind in ("reference", "beam")}
    runs = {}
    for kind in ("reference", "beam"):
        runs[kind] = child(kind, data, outs[kind], args, os.path.join(directory, f"{kind}.json"))
        r = runs[kind]
        log(f"# {n} events, {kind}: {r['seconds']:.1f}s ({n / r['seconds']:,.0f} events/s), child "
            f"{r['child_s']:.1f}s ({r['cpu_s']:.1f}s CPU), peak RSS {r['peak_rss_gb']:.2f} GB; rows {r['rows']}")
    result = {"generate_s": round(generate_s, 1), "log": {k: v for k, v in data.items() if k not in ("events", "catalog")}}
    for kind, r in runs.items():
        result[kind] = {"seconds": round(r["seconds"], 2), "events_per_s": round(n / r["seconds"]),
                        "child_s": round(r["child_s"], 2), "child_cpu_s": round(r["cpu_s"], 2),
                        "peak_rss_gb": round(r["peak_rss_gb"], 3), "rows": r["rows"]}
    result["ratio"] = round(runs["reference"]["seconds"] / runs["beam"]["seconds"], 4)
    if n <= args.verify_up_to:
        same, details = compare(outs["beam"], outs["reference"])
        result["same_output"] = same
        result["compared"] = {"files": details["files"], "rows": details["rows"]}
        log(f"# {n} events: outputs {'the same' if same else 'DIFFER'} ({details['files']} files, "
            f"{details['rows']} rows compared)" + "".join(f"\n#   {m}" for m in details["mismatches"][:20]))
    else:
        result["same_output"] = None
    shutil.rmtree(directory, ignore_errors=True) if not args.keep else None
    return result


def profile_beam(n, args, root):
    """The Beam run of `n` events again, under cProfile in a child; the profile is printed (stderr)."""
    directory = os.path.join(root, f"profile-n{n}")
    data = synthetic_log(n, os.path.join(directory, "log"), seed=args.seed)
    try:
        done = child("beam", data, os.path.join(directory, "out"), args, os.path.join(directory, "beam.json"),
                     profile=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return round(done["seconds"], 1)


def main(argv=None):
    global _QUIET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k events only (a smoke test, about 20 s on 2 cores)")
    parser.add_argument("--events", type=int, nargs="+", default=None,
                        help="log sizes in events (default 1000000 10000000)")
    parser.add_argument("--history-length", type=int, default=20)
    parser.add_argument("--split", choices=("time", "leave-one-out"), default="time",
                        help="time: test from day 28, 5%% validation (default); or leave-one-out")
    parser.add_argument("--out-dir", default=None, help="where logs and outputs go (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep each size's log and outputs in --out-dir")
    parser.add_argument("--verify-up-to", type=int, default=1_000_000,
                        help="compare the two outputs at sizes up to this many events")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="cProfile the smallest size's Beam run: auto = when Beam is slower than the reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="only the final JSON line on stdout")
    # A child's run (internal).
    parser.add_argument("--one", choices=("beam", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--profile-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args)
        return
    _QUIET = args.json
    sizes = args.events or ([100_000] if args.quick else [1_000_000, 10_000_000])

    start, load_start = time.perf_counter(), os.getloadavg()
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        root, remove = args.out_dir, False
    else:
        root, remove = tempfile.mkdtemp(prefix="bench_prepare_"), True
    try:
        results = {n: bench_size(n, args, root) for n in sizes}
        slower = any(r["ratio"] < 1 for r in results.values())
        profiled_s = None
        if args.profile == "always" or (args.profile == "auto" and slower):
            profiled_s = profile_beam(min(sizes), args, root)
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)

    log(f"{'events':>10} {'ref s':>8} {'ref ev/s':>10} {'ref GB':>7} {'beam s':>8} {'beam ev/s':>10} "
        f"{'beam GB':>8} {'beam/ref':>9} {'same':>5}")
    for n, r in results.items():
        ref, beam = r["reference"], r["beam"]
        same = {True: "yes", False: "NO", None: "-"}[r["same_output"]]
        log(f"{n:>10} {ref['seconds']:>8.1f} {ref['events_per_s']:>10,} {ref['peak_rss_gb']:>7.2f} "
            f"{beam['seconds']:>8.1f} {beam['events_per_s']:>10,} {beam['peak_rss_gb']:>8.2f} {r['ratio']:>9.3f} "
            f"{same:>5}")
    largest = max(sizes)
    ratio = results[largest]["ratio"]
    big = [n for n in sizes if n >= MEMORY_SIZE]
    peak = results[max(big)]["beam"]["peak_rss_gb"] if big else None
    smallest = results[min(sizes)]["beam"]
    same = [r["same_output"] for r in results.values() if r["same_output"] is not None]
    print(json.dumps({
        "ratio": ratio, "target": TARGET, "direction": ">=", "met": ratio >= TARGET, "events": largest,
        "memory_peak_gb": peak, "memory_target_gb": MEMORY_TARGET_GB, "memory_met": None if peak is None
        else peak <= MEMORY_TARGET_GB,
        # The Beam seconds of 10M events, extrapolated linearly from the smallest size run.
        "beam_10m_extrapolated_s": round(smallest["seconds"] * MEMORY_SIZE / min(sizes), 0),
        "same_output": all(same) if same else None, "profiled_s": profiled_s,
        "quick": args.quick, "sizes": sizes, "split": args.split, "history_length": args.history_length,
        "results": {str(n): r for n, r in results.items()}, "wall_s": round(time.perf_counter() - start, 1),
        # 1-minute load average at the start and the end: how busy the machine was (2 cores here).
        "load_average": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "apache_beam": _version("apache_beam"), "pyarrow": pa.__version__, "numpy": np.__version__},
    }))
    if same and not all(same):
        sys.exit(1)


def _version(module):
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
