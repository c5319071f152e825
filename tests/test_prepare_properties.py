"""Properties of `tfrec-video prepare` over random event logs (hypothesis, derandomized: the same cases every run).

The per-user steps (`cap_events`, `histories`, `user_rows`, `SplitRule.assign`,
`NegativeSampler.sample`) are checked on many random users against a plain
re-implementation written here (sort by time then input order, filter, slice);
the whole pipeline (`prepare` on Beam's in-process runner) on a few random logs
(Parquet in several row groups and files, or CSV; with or without `clicked`,
`hour`, `device`; every split kind; a cap or none). What must hold:

* a row's history holds only videos its user clicked strictly before the row's
  time, newest first, equal times the later in the input first, at most
  `history_length`;
* no sampled negative is a video its user clicked, and popularity negatives are
  drawn from the train split's positives only;
* every event lands in exactly one split, by the split's rule (time: `test_from`
  and the latest `validation_fraction` of the training period; leave-one-out:
  the last event, then the one before);
* a user over `max_events_per_user` keeps exactly the latest events, and
  `cap_events` never holds much more than twice the cap;
* one worker and two workers write the same tables (and catalog), byte for byte, each shard sorted by
  user; the reports differ only in `out` and `seconds`.
* a video clicked in an event the cap dropped is still never that user's negative, the report's
  `validation_from` is the one the split used, and a time split takes any `validation_fraction` < 1.
"""

import collections
import filecmp
import glob
import itertools
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table_numpy, write_table
from tfrec_video.preparation import (EventBlock, NegativeSampler, PrepareConfig, SplitRule, cap_events, histories,
                                     prepare, user_rng, user_rows)
from tfrec_video.preparation.events import ROW_BITS
from tfrec_video.preparation.splits import TEST, TRAIN, VALIDATION

BASE = 1_700_000_000  # 2023-11-14T22:13:20Z
STEP = 1800  # Event times are BASE + k * STEP: many ties, and the UTC hour changes every other step.
VIDEOS = [f"v{i}" for i in range(10)]
DEVICES = ["phone", "tv", "web"]
SPLIT_NAMES = ("train", "validation", "test")
ONE_WORKER = ["--runner=DirectRunner", "--direct_num_workers=1"]
TWO_WORKERS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]

PURE = settings(derandomize=True, deadline=None, max_examples=300, database=None)
PIPELINE = settings(derandomize=True, deadline=None, max_examples=3, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------------------------
# The reference: what a user's rows must be, written the plain way.

Event = collections.namedtuple("Event", "user video ts clicked hour device order")


def _time_order(events):
    return sorted(events, key=lambda e: (e.ts, e.order))


def _kept(events, cap):
    """A user's events in time order (ties: input order), the latest `cap` of them."""
    ordered = _time_order(events)
    return ordered if cap is None else ordered[max(0, len(ordered) - cap):]


def _history(kept, event, history_length):
    earlier = [e for e in kept if e.ts < event.ts and e.clicked]
    earlier.sort(key=lambda e: (e.ts, e.order), reverse=True)
    return [e.video for e in earlier[:history_length]]


def _hour(event):
    return event.hour if event.hour >= 0 else (event.ts // 3600) % 24


def _block(events):
    """An EventBlock of `Event`s, in the given order."""
    has_device = bool(events) and events[0].device is not None
    return EventBlock(np.array([e.user for e in events], object), np.array([e.video for e in events], object),
                      np.array([e.ts for e in events], np.int64), np.array([e.order for e in events], np.int64),
                      np.array([e.clicked for e in events], np.int8), np.array([e.hour for e in events], np.int8),
                      np.array([e.device for e in events], object) if has_device else None)


def _block_events(block):
    return [Event(block.user_id[i], block.video_id[i], block.timestamp[i], block.clicked[i], block.hour[i],
                  None if block.device is None else block.device[i], block.order[i]) for i in range(len(block))]


# One user's events: (video, time step, clicked, hour or -1); the input order is the list order.
user_events = st.lists(st.tuples(st.integers(0, len(VIDEOS) - 1), st.integers(0, 8), st.booleans(),
                                 st.sampled_from([-1, 0, 7, 23])), min_size=1, max_size=30)


def _events_of(drawn, user="u", watch_log=False):
    return [Event(user, VIDEOS[v], BASE + t * STEP, 1 if watch_log else int(c), h, None, i)
            for i, (v, t, c, h) in enumerate(drawn)]


# ---------------------------------------------------------------------------------------------------------------
# cap_events


class _ConcatSizes:
    """Records the number of events each `EventBlock.concat` call is handed (what `cap_events` holds)."""

    def __enter__(self):
        self.sizes = []
        self._original = EventBlock.__dict__["concat"]
        original = self._original.__func__

        def concat(blocks):
            self.sizes.append(sum(len(b) for b in blocks))
            return original(blocks)

        EventBlock.concat = staticmethod(concat)
        return self

    def __exit__(self, *exc):
        EventBlock.concat = self._original


@PURE
@given(drawn=user_events, cap=st.one_of(st.none(), st.integers(1, 8)), block_size=st.integers(1, 5),
       shuffle=st.integers(0, 2**32 - 1))
def test_cap_events_keeps_exactly_the_latest_events_in_time_order(drawn, cap, block_size, shuffle):
    events = _events_of(drawn)
    arrival = [events[i] for i in np.random.default_rng(shuffle).permutation(len(events))]
    blocks = [_block(arrival[a:a + block_size]) for a in range(0, len(arrival), block_size)]
    with _ConcatSizes() as held:
        kept, dropped = cap_events(iter(blocks), cap)
    expected = _kept(events, cap)
    assert _block_events(kept) == expected
    assert dropped == len(events) - len(expected)
    assert len(kept) == (len(events) if cap is None else min(cap, len(events)))
    if cap is not None:
        # Trimmed whenever it passes twice the cap: never more than that plus the block just added.
        assert max(held.sizes, default=0) <= 2 * cap + block_size


def test_cap_events_of_a_long_stream_holds_about_twice_the_cap():
    cap, n = 5, 1000
    rng = np.random.default_rng(7)
    events = [Event("u", VIDEOS[rng.integers(10)], BASE + int(rng.integers(0, 400)) * STEP, 1, -1, None, i)
              for i in range(n)]
    with _ConcatSizes() as held:
        kept, dropped = cap_events((_block([e]) for e in events), cap)
    assert dropped == n - cap
    assert _block_events(kept) == _kept(events, cap)
    assert len(held.sizes) > 100 and max(held.sizes) == 2 * cap + 1


# ---------------------------------------------------------------------------------------------------------------
# histories


@PURE
@given(drawn=user_events, history_length=st.integers(1, 6))
def test_histories_hold_only_earlier_clicks_newest_first(drawn, history_length):
    events = _events_of(drawn)
    kept, _ = cap_events([_block(events)], None)
    ordered = _block_events(kept)
    got = histories(kept, history_length)
    assert len(got) == len(ordered)
    for event, history in zip(ordered, got):
        assert list(history) == _history(ordered, event, history_length)
        assert len(history) <= history_length
        # Every entry is a click of this user strictly before the row's time (none at or after it)...
        for v in history:
            assert any(e.video == v and e.clicked and e.ts < event.ts for e in ordered), (event, history)
        # ...newest first, equal times the later input first: the latest clicks before the row, in that order.
        earlier = sorted(((e.ts, e.order, e.video) for e in ordered if e.clicked and e.ts < event.ts), reverse=True)
        assert list(history) == [v for _, _, v in earlier[:history_length]]


def test_equal_timestamps_are_not_each_others_history_and_the_later_input_comes_first():
    events = [Event("u", "a", 10, 1, -1, None, 0), Event("u", "b", 10, 1, -1, None, 1),
              Event("u", "c", 20, 1, -1, None, 2), Event("u", "d", 20, 1, -1, None, 3),
              Event("u", "e", 30, 1, -1, None, 4)]
    kept, _ = cap_events([_block(events[::-1])], None)
    assert histories(kept, 3) == [[], [], ["b", "a"], ["b", "a"], ["d", "c", "b"]]


# ---------------------------------------------------------------------------------------------------------------
# SplitRule.assign


@PURE
@given(drawn=user_events)
def test_leave_one_out_holds_out_the_last_event_then_the_one_before(drawn):
    events = _events_of(drawn)
    kept, _ = cap_events([_block(events)], None)
    split = SplitRule("leave-one-out").assign(kept.timestamp, kept.order, "u")
    by_event = dict(zip(kept.order.tolist(), split.tolist()))
    ordered = _time_order(events)  # Last by time, ties by input order.
    n = len(events)
    expected = {e.order: TRAIN for e in ordered}
    if n >= 2:
        expected[ordered[-1].order] = TEST
    if n >= 3:
        expected[ordered[-2].order] = VALIDATION
    assert by_event == expected


@PURE
@given(steps=st.lists(st.integers(0, 40), min_size=1, max_size=30), test_step=st.integers(0, 45),
       first_step=st.integers(-10, 0), fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75]))
def test_time_split_puts_test_from_on_in_test_and_the_latest_training_fraction_in_validation(
        steps, test_step, first_step, fraction):
    ts = np.sort(np.array([BASE + s * STEP for s in steps], np.int64))
    test_from = BASE + test_step * STEP
    first = int(ts.min()) + first_step * STEP
    rule = SplitRule("time", test_from=test_from, validation_fraction=fraction)
    validation_from = rule.validation_from(first)
    split = rule.assign(ts, np.arange(len(ts)), "u", validation_from)
    if fraction == 0.0:
        assert validation_from is None
    else:
        assert test_from - validation_from == math.floor(fraction * max(test_from - first, 0))
    for t, s in zip(ts.tolist(), split.tolist()):
        if t >= test_from:
            assert s == TEST
        elif validation_from is not None and t >= validation_from:
            assert s == VALIDATION
        else:
            assert s == TRAIN


def test_time_split_takes_any_validation_fraction_below_one():
    rule = SplitRule("time", test_from=BASE + 10, validation_fraction=0.95)
    assert rule.validation_from(BASE - 90) == BASE + 10 - 95


def test_time_split_reads_iso_test_from_as_utc():
    rule = SplitRule("time", test_from="2023-11-14T22:13:20")
    assert rule.test_seconds == BASE
    assert rule.assign(np.array([BASE - 1, BASE, BASE + 1]), np.arange(3), "u").tolist() == [TRAIN, TEST, TEST]
    assert SplitRule("time", test_from="2023-11-15T00:13:20+02:00").test_seconds == BASE


@PURE
@given(orders=st.lists(st.integers(0, 2**45), min_size=1, max_size=40, unique=True), user=st.text(min_size=1),
       seed=st.integers(0, 2**31), test_fraction=st.sampled_from([0.1, 0.3]),
       validation_fraction=st.sampled_from([0.0, 0.2]), pick=st.integers(0, 2**32 - 1))
def test_random_split_of_an_event_depends_only_on_seed_user_and_input_order(
        orders, user, seed, test_fraction, validation_fraction, pick):
    rule = SplitRule("random", test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed)
    order = np.array(orders, np.int64)
    split = rule.assign(np.zeros(len(order), np.int64), order, user)
    assert set(split.tolist()) <= {TRAIN, VALIDATION, TEST}
    if validation_fraction == 0.0:
        assert VALIDATION not in split.tolist()
    # Any subset, in any arrangement (another worker, another bundle), gets the same splits.
    subset = np.random.default_rng(pick).permutation(len(order))[:max(1, len(order) // 2)]
    again = rule.assign(np.zeros(len(subset), np.int64), order[subset], user)
    assert again.tolist() == split[subset].tolist()


def test_random_split_fractions_match_the_rule():
    rule = SplitRule("random", test_fraction=0.1, validation_fraction=0.2, seed=3)
    split = rule.assign(np.zeros(20_000, np.int64), np.arange(20_000, dtype=np.int64), "u1")
    shares = np.bincount(split, minlength=3) / len(split)
    assert abs(shares[TEST] - 0.1) < 0.015 and abs(shares[VALIDATION] - 0.2) < 0.015
    other = SplitRule("random", test_fraction=0.1, validation_fraction=0.2, seed=4)
    assert (other.assign(np.zeros(20_000, np.int64), np.arange(20_000, dtype=np.int64), "u1") != split).mean() > 0.2


# ---------------------------------------------------------------------------------------------------------------
# NegativeSampler.sample


@PURE
@given(n_videos=st.integers(1, 12), weights=st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=12,
                                                                           max_size=12)),
       exclude=st.sets(st.integers(0, 14), max_size=12), events=st.integers(0, 6), k=st.integers(0, 5),
       seed=st.integers(0, 2**31))
def test_negatives_are_distinct_never_excluded_and_short_only_when_too_few_remain(n_videos, weights, exclude, events,
                                                                                   k, seed):
    ids = [f"v{i}" for i in range(n_videos)]
    counts = None if weights is None else weights[:n_videos]
    banned = {f"v{i}" for i in exclude}  # May name videos outside the catalog.
    sampler = NegativeSampler(ids, counts)
    drawn, short = sampler.sample(user_rng(seed, "u"), events, k, banned)
    allowed = {v for i, v in enumerate(ids) if counts is None or counts[i] > 0} - banned
    assert drawn.shape == (events, k)
    total = 0
    for row in drawn.tolist():
        values = [v for v in row if v is not None]
        assert row[:len(values)] == values  # Short rows are padded at the end.
        assert len(set(values)) == len(values)
        assert set(values) <= allowed
        assert len(values) == min(k, len(allowed))
        total += len(values)
    assert short == events * k - total
    again, _ = NegativeSampler(ids, counts).sample(user_rng(seed, "u"), events, k, banned)
    assert again.tolist() == drawn.tolist()


def test_popularity_negatives_follow_the_counts():
    sampler = NegativeSampler(["a", "b", "c"], [1, 0, 3])
    drawn, short = sampler.sample(user_rng(0, "u"), 4000, 1, set())
    assert short == 0
    values = collections.Counter(drawn[:, 0].tolist())
    assert set(values) == {"a", "c"}
    assert abs(values["c"] / 4000 - 0.75) < 0.03


# ---------------------------------------------------------------------------------------------------------------
# user_rows


@PURE
@given(drawn=user_events, watch_log=st.booleans(), k=st.integers(0, 3), history_length=st.integers(1, 4),
       kind=st.sampled_from(["leave-one-out", "time", "random"]), test_step=st.integers(0, 9),
       seed=st.integers(0, 2**31))
def test_user_rows_are_the_events_with_their_history_then_their_negatives(drawn, watch_log, k, history_length,
                                                                          kind, test_step, seed):
    events = _events_of(drawn, "u7", watch_log=watch_log)
    k = k if watch_log else 0
    kept, _ = cap_events([_block(events)], None)
    rule = SplitRule(kind, test_from=BASE + test_step * STEP if kind == "time" else None, seed=seed)
    split = rule.assign(kept.timestamp, kept.order, "u7")
    sampler = NegativeSampler(VIDEOS)
    rows, short = user_rows("u7", kept, split, history_length, k, sampler if k else None,
                            user_rng(seed, "u7") if k else None)
    ordered = _block_events(kept)
    clicked = {e.video for e in events if e.clicked}
    available = len(set(VIDEOS) - clicked)
    assert set(rows) == set(split.tolist())
    missing = 0
    for s, columns in rows.items():
        assert set(columns) == {"user_id", "history", "hour", "video_id", "clicked", "timestamp"}
        assert columns["user_id"] == ["u7"] * len(columns["video_id"])
        table = list(zip(columns["video_id"], columns["clicked"], columns["timestamp"], columns["hour"],
                         columns["history"]))
        i = 0
        for event in (e for e, x in zip(ordered, split.tolist()) if x == s):
            history = _history(ordered, event, history_length)
            assert table[i] == (event.video, event.clicked, event.ts, _hour(event), history)
            i += 1
            negatives = []
            while i < len(table) and k and table[i][1] == 0:
                negatives.append(table[i][0])
                assert table[i][1:] == (0, event.ts, _hour(event), history)
                i += 1
            assert len(negatives) == min(k, available)
            assert len(set(negatives)) == len(negatives) and not set(negatives) & clicked
            missing += k - len(negatives)
        assert i == len(table)
    assert short == missing


# ---------------------------------------------------------------------------------------------------------------
# The whole pipeline on random logs.


@st.composite
def logs(draw):
    """A random log and how to prepare it: `(rows, options)`; a row is (user, video, step, clicked, hour, device).

    Each option's first choice is the one hypothesis tries first: no cap (so that every input event is
    checked), negatives, a history shorter than most users' clicks, a test time inside the log.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, n_users = draw(st.integers(12, 50)), draw(st.integers(3, 6))
    rows = list(zip(rng.integers(0, n_users, n).tolist(), rng.integers(0, len(VIDEOS), n).tolist(),
                    rng.integers(0, 13, n).tolist(), (rng.random(n) < 0.6).tolist(), rng.integers(0, 24, n).tolist(),
                    rng.choice(DEVICES, n).tolist()))
    options = {
        "hour": draw(st.booleans()), "device": draw(st.booleans()),
        "format": draw(st.sampled_from(["parquet", "csv"])), "files": draw(st.sampled_from([2, 1])),
        "test_step": draw(st.sampled_from([6, 0, 3, 9, 14])),
        "validation_fraction": draw(st.sampled_from([0.25, 0.0, 0.5])),
        "negatives": draw(st.sampled_from([2, 0, 1, 3])), "sampling": draw(st.sampled_from(["popularity", "uniform"])),
        "cap": draw(st.sampled_from([None, 3, 6])), "history_length": draw(st.sampled_from([3, 1, 2])),
        "num_shards": draw(st.sampled_from([2, 1, 3])), "seed": draw(st.integers(0, 1000)),
    }
    if options["test_step"] <= 12:  # An event exactly at the test time (the boundary: it is test).
        rows[0] = rows[0][:2] + (options["test_step"],) + rows[0][3:]
    return rows, options


def _write_log(rows, options, directory):
    """Writes the log in `options["files"]` files; returns the events (with the pipeline's input order)."""
    os.makedirs(directory)
    bounds = np.linspace(0, len(rows), options["files"] + 1).astype(int).tolist()
    events = []
    f = 0  # The file's place among the log's files (sorted by name): the high bits of an event's input order.
    for a, b in itertools.pairwise(bounds):
        part = rows[a:b]
        if not part:
            continue
        columns = {"user_id": [f"u{r[0]}" for r in part], "video_id": [VIDEOS[r[1]] for r in part],
                   "timestamp": [BASE + r[2] * STEP for r in part]}
        if options["clicked"]:
            columns["clicked"] = [int(r[3]) for r in part]
        if options["hour"]:
            columns["hour"] = [r[4] for r in part]
        if options["device"]:
            columns["device"] = [r[5] for r in part]
        table = pa.table(columns)
        path = f"{directory}/events-{f}.{options['format']}"
        if options["format"] == "parquet":
            pq.write_table(table, path, row_group_size=4)
        else:
            pa_csv.write_csv(table, path)
        for i, r in enumerate(part):
            events.append(Event(f"u{r[0]}", VIDEOS[r[1]], BASE + r[2] * STEP, int(r[3]) if options["clicked"] else 1,
                                r[4] if options["hour"] else -1, r[5] if options["device"] else None,
                                (f << ROW_BITS) + i))
        f += 1
    return events


def _config(root, options, out="out", events=None):
    kind = options["kind"]
    rule = SplitRule(kind, test_from=BASE + options["test_step"] * STEP if kind == "time" else None,
                     validation_fraction=options["validation_fraction"], seed=options["seed"])
    return PrepareConfig(events=events or f"{root}/log/*.{options['format']}", catalog=f"{root}/catalog.parquet",
                         out=f"{root}/{out}", split=rule, history_length=options["history_length"],
                         negatives=0 if options["clicked"] else options["negatives"],
                         negative_sampling=options["sampling"], num_shards=options["num_shards"],
                         max_events_per_user=options["cap"], seed=options["seed"])


def _catalog(root, videos=VIDEOS):
    write_table({"video_id": list(videos), "title": [f"title of {v}" for v in videos]},
                f"{root}/catalog.parquet", catalog_schema())


def _read_splits(out, history_length):
    """`{split: {user: [(video, clicked, timestamp, hour, device, history), ...]}}`, each user's rows in file order."""
    got = {}
    for split in SPLIT_NAMES:
        if not os.path.isdir(f"{out}/{split}"):
            continue
        t = read_table_numpy(f"{out}/{split}", impressions_schema(history_length))
        devices = t.get("device", [None] * len(t["user_id"]))
        by_user = got.setdefault(split, {})
        for u, v, c, ts, h, d, hist in zip(t["user_id"], t["video_id"], t["clicked"], t["timestamp"], t["hour"],
                                          devices, t["history"]):
            by_user.setdefault(u, []).append((v, int(c), int(ts), int(h), d or None, [x for x in hist if x]))
    return got


def _expected_splits(events, config):
    """The reference: each kept event's split, by the rules as documented."""
    rule = config.split
    users = collections.defaultdict(list)
    for e in events:
        users[e.user].append(e)
    first = min(e.ts for e in events)
    validation_from = None
    if rule.kind == "time" and rule.validation_fraction:
        validation_from = rule.test_seconds - math.floor(rule.validation_fraction
                                                         * max(rule.test_seconds - first, 0))
    expected = {}
    for user, mine in users.items():
        kept = _kept(mine, config.max_events_per_user)
        if rule.kind == "time":
            split = [TEST if e.ts >= rule.test_seconds else
                     VALIDATION if validation_from is not None and e.ts >= validation_from else TRAIN for e in kept]
        elif rule.kind == "leave-one-out":
            n = len(kept)
            split = [TEST if (n >= 2 and i == n - 1) else VALIDATION if (n >= 3 and i == n - 2) else TRAIN
                     for i in range(n)]
        else:  # Random: the rule's hash of (seed, user, input order), checked on its own above.
            split = rule.assign(np.array([e.ts for e in kept]), np.array([e.order for e in kept], np.int64),
                                user).tolist()
        expected[user] = (kept, split)
    return expected, validation_from


def _check_prepared(events, config, report, has_clicked):
    """Every property of one prepared log; returns the number of sampled negatives seen."""
    out, H = config.out, config.history_length
    k = 0 if has_clicked else config.negatives
    got = _read_splits(out, H)
    expected, validation_from = _expected_splits(events, config)
    clicked_in_log = collections.defaultdict(set)
    for e in events:
        if e.clicked:
            clicked_in_log[e.user].add(e.video)
    dropped = sum(len([e for e in events if e.user == u]) - len(kept) for u, (kept, _) in expected.items())
    train_positives = {r[0] for rows in got.get("train", {}).values() for r in rows if r[1] == 1}

    sampled = 0
    event_rows = collections.Counter()
    for split_index, split in enumerate(SPLIT_NAMES):
        for user, rows in got.get(split, {}).items():
            kept = expected[user][0]
            mine = [e for e, s in zip(*expected[user]) if s == split_index]
            i = 0
            for event in mine:  # The user's rows of this split: its events in time order, each with its negatives.
                history = _history(kept, event, H)
                assert rows[i] == (event.video, event.clicked, event.ts, _hour(event), event.device, history), (
                    split, user, i)
                # No history entry is at or after the row's time: each is a click of this user strictly before.
                for v in history:
                    assert any(e.video == v and e.clicked and e.ts < event.ts for e in kept)
                event_rows[(split, user, event.video, event.ts)] += 1
                i += 1
                negatives = []
                while k and i < len(rows) and rows[i][1] == 0:
                    assert rows[i][1:] == (0, event.ts, _hour(event), event.device, history)
                    negatives.append(rows[i][0])
                    i += 1
                sampled += len(negatives)
                assert len(negatives) <= k and len(set(negatives)) == len(negatives)
                assert not set(negatives) & {e.video for e in kept if e.clicked}, (user, negatives)
                if not dropped:
                    assert not set(negatives) & clicked_in_log[user], (user, negatives)
                if config.negative_sampling == "popularity":
                    assert set(negatives) <= train_positives
                else:
                    assert set(negatives) <= set(VIDEOS)
            assert i == len(rows), (split, user, rows[i:])
    # Every kept event lands in exactly one split (and, without a cap drop, every input event).
    kept_events = collections.Counter((e.user, e.video, e.ts) for kept, _ in expected.values() for e in kept)
    assert collections.Counter((u, v, t) for (_, u, v, t), n in event_rows.items() for _ in range(n)) == kept_events
    if not dropped:
        assert kept_events == collections.Counter((e.user, e.video, e.ts) for e in events)

    log = report["log"]
    assert log["events"] == len(events) and log["users"] == len(expected)
    assert log["dropped_over_cap"] == dropped and log["dropped_unknown"] == 0
    rows_total = sum(s["rows"] for s in report["splits"].values())
    assert rows_total == sum(kept_events.values()) + sampled
    if k:
        assert sampled == sum(kept_events.values()) * k - log["negatives_short"]
    if not dropped:
        assert report["validation_from"] == validation_from
    with open(f"{out}/prepare_report.json") as handle:
        assert json.load(handle)["log"] == log
    return sampled


@pytest.mark.parametrize("clicked", [False, True], ids=["watch-log", "clicked-log"])
@pytest.mark.parametrize("kind", ["time", "leave-one-out", "random"])
@PIPELINE
@given(log=logs())
def test_prepare_gives_each_event_its_split_history_and_negatives(kind, clicked, log, tmp_path_factory):
    rows, options = log
    options = {**options, "kind": kind, "clicked": clicked}
    root = str(tmp_path_factory.mktemp("prop"))
    _catalog(root)
    events = _write_log(rows, options, f"{root}/log")
    config = _config(root, options)
    report = prepare(config, ONE_WORKER)
    _check_prepared(events, config, report, options["clicked"])
    assert not glob.glob(f"{config.out}.tmp-*")


def _shard_files(out):
    return sorted(os.path.relpath(p, out) for p in glob.glob(f"{out}/**/*.parquet", recursive=True))


@settings(derandomize=True, deadline=None, max_examples=3, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=logs())
def test_one_worker_and_two_workers_write_the_same_files(log, tmp_path_factory):
    rows, options = log
    options = {**options, "kind": "random", "clicked": False}  # The most seeded: split and negatives.
    root = str(tmp_path_factory.mktemp("workers"))
    _catalog(root)
    _write_log(rows, options, f"{root}/log")
    one = _config(root, options, "one")
    two = _config(root, options, "two")
    report_one = prepare(one, ONE_WORKER)
    report_two = prepare(two, TWO_WORKERS)
    files = _shard_files(one.out)
    assert files == _shard_files(two.out) and "catalog/part-00000.parquet" in files
    for name in files:
        assert filecmp.cmp(f"{one.out}/{name}", f"{two.out}/{name}", shallow=False), name
        if not name.startswith("catalog/"):
            users = pq.read_table(f"{one.out}/{name}").column("user_id").to_pylist()
            assert users == sorted(users), name  # A shard's rows are sorted by user.
    # The reports differ only in where they were written and how long it took.
    for report in (report_one, report_two):
        report.pop("seconds")
        report["config"].pop("out")
    assert report_one == report_two
    with open(f"{one.out}/run_config.yaml") as a, open(f"{two.out}/run_config.yaml") as b:
        assert a.read().replace(one.out, "OUT") == b.read().replace(two.out, "OUT")


def _popularity_log(root):
    """Six users; "late" is clicked by four of them, only on or after the test time."""
    events = []
    for u in range(6):
        for j in range(3):
            events.append((f"u{u}", VIDEOS[(u + j) % 4], BASE + (j + u) * STEP))
        if u < 4:
            events.append((f"u{u}", "late", BASE + 20 * STEP))
    os.makedirs(f"{root}/log")
    pq.write_table(pa.table({"user_id": [e[0] for e in events], "video_id": [e[1] for e in events],
                             "timestamp": [e[2] for e in events]}), f"{root}/log/events.parquet", row_group_size=5)
    _catalog(root, VIDEOS[:6] + ["late"])
    return f"{root}/log/events.parquet"


@pytest.mark.parametrize("sampling", ["popularity", "uniform"])
def test_popularity_negatives_count_the_train_split_only(sampling, tmp_path):
    events = _popularity_log(str(tmp_path))
    config = PrepareConfig(events=events, catalog=str(tmp_path / "catalog.parquet"), out=str(tmp_path / "out"),
                           split=SplitRule("time", test_from=BASE + 20 * STEP), negatives=3,
                           negative_sampling=sampling, history_length=3)
    report = prepare(config)
    got = _read_splits(config.out, 3)
    negatives = collections.Counter(r[0] for split in got.values() for rows in split.values() for r in rows
                                    if r[1] == 0)
    train_positives = {r[0] for rows in got["train"].values() for r in rows if r[1] == 1}
    assert train_positives == set(VIDEOS[:4])
    assert report["splits"]["test"]["positives"] == 4 and report["splits"]["test"]["cold_video_share"] > 0
    if sampling == "popularity":
        assert set(negatives) == train_positives  # Never "late", nor v4/v5 (no positive at all).
    else:
        assert negatives["late"] > 0 and set(negatives) <= set(VIDEOS[:6]) | {"late"}


def _capped_log(root, rows, columns=("user_id", "video_id", "timestamp")):
    os.makedirs(f"{root}/log")
    pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)}),
                   f"{root}/log/events.parquet", row_group_size=2)
    _catalog(root, VIDEOS[:4])
    return f"{root}/log/events.parquet"


def test_a_capped_user_keeps_exactly_the_latest_events(tmp_path):
    rows = [("u", VIDEOS[i % 4], BASE + (i // 2) * STEP) for i in range(9)] + [("w", "v0", BASE)]
    events = _capped_log(str(tmp_path), rows)
    config = PrepareConfig(events=events, catalog=str(tmp_path / "catalog.parquet"), out=str(tmp_path / "out"),
                           split=SplitRule("leave-one-out"), negatives=0, max_events_per_user=3)
    report = prepare(config)
    got = _read_splits(config.out, 20)
    # u's last three by time, and at the tie (two events at step 3) the later input: rows 6, 7, 8.
    assert [(r[0], r[2]) for s in SPLIT_NAMES for r in got.get(s, {}).get("u", [])] == [
        ("v2", BASE + 3 * STEP), ("v3", BASE + 3 * STEP), ("v0", BASE + 4 * STEP)]
    assert [r[5] for s in SPLIT_NAMES for r in got.get(s, {}).get("u", [])] == [[], [], ["v3", "v2"]]
    assert report["log"]["dropped_over_cap"] == 6 and report["log"]["events"] == 10
    assert got["train"]["w"] == [("v0", 1, BASE, (BASE // 3600) % 24, None, [])]


def test_a_video_clicked_in_an_event_dropped_by_the_cap_is_not_a_negative(tmp_path):
    events = _capped_log(str(tmp_path), [("a", "v1", BASE), ("a", "v2", BASE + STEP), ("a", "v3", BASE + 2 * STEP)])
    config = PrepareConfig(events=events, catalog=str(tmp_path / "catalog.parquet"), out=str(tmp_path / "out"),
                           split=SplitRule("leave-one-out"), negatives=2, negative_sampling="uniform",
                           max_events_per_user=2)
    prepare(config)
    got = _read_splits(config.out, 20)
    negatives = {r[0] for split in got.values() for r in split["a"] if r[1] == 0}
    assert negatives and "v1" not in negatives  # Fails: negatives == {"v0", "v1"}.


def test_the_report_names_the_validation_start_the_split_used(tmp_path):
    rows = [("a", "v1", BASE, 1), ("a", "v2", BASE + 120 * 60, 1), ("a", "v3", BASE + 140 * 60, 1),
            ("b", "v0", BASE + 100 * 60, 1)]
    events = _capped_log(str(tmp_path), rows, ("user_id", "video_id", "timestamp", "clicked"))
    config = PrepareConfig(events=events, catalog=str(tmp_path / "catalog.parquet"), out=str(tmp_path / "out"),
                           split=SplitRule("time", test_from=BASE + 200 * 60, validation_fraction=0.5),
                           max_events_per_user=2)
    report = prepare(config)
    got = _read_splits(config.out, 20)
    # The split used the log's first event (BASE, dropped by the cap): validation from BASE + 100 min, so b's
    # event is validation...
    assert got["validation"]["b"][0][2] == BASE + 100 * 60 and "train" not in got
    # ...but the report says validation starts at BASE + 150 min (from the first kept event, b's).
    assert report["validation_from"] == BASE + 100 * 60
