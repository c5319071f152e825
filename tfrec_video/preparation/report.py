"""What `prepare_report.json` says: counts, click rates, cold-start shares, history lengths.

Statistics are summed per user (`user_statistics`) and merged in any order
(`merge_statistics` is associative and commutative, a Beam combiner), then
turned into the report (`split_report`). Per split:

* `rows`, `positives`, `negatives`, `click_rate`, `users`;
* `cold_video_share`: the share of the split's rows whose video the train
  split never shows; `cold_user_share`: of rows of users with no train row;
* `history_length`: the mean, the share of empty histories and the histogram
  (`histogram[n]`: rows whose history holds `n` videos).

And for the log: `events` read, `users`, `dropped_unknown` (videos not in
the catalog, with `--drop-unknown`), `dropped_over_cap` (beyond
`max_events_per_user`), `negatives_short` (wanted negatives that could not be
drawn), and the first and last event time.

Example:

>>> a = user_statistics({0: {"video_id": ["v"], "clicked": [1], "history": [[]]}}, {"v": (1, 1)}, 1, 0, 0, 2)
>>> report = split_report(merge_statistics([a, a]), 2)
>>> report["splits"]["train"]["rows"], report["splits"]["train"]["history_length"]["histogram"]
(2, [2, 0, 0])
"""

from typing import Any, Dict, Iterable, Mapping

from tfrec_video.preparation.splits import SPLITS, TRAIN

STATISTICS_FILE = "_statistics.json"  # The pipeline's merged statistics, read back into the report.
ERROR_FILE = "_error.json"  # The first bad input row the reading step met, raised by the driver.
_MIN_KEYS = ("first_timestamp",)
_MAX_KEYS = ("last_timestamp",)


def user_statistics(rows: Mapping[int, Mapping[str, list]], train_videos: Mapping[str, Any], events: int,
                    dropped_over_cap: int, short: int, history_length: int,
                    timestamps: Iterable[int] = ()) -> Dict[str, Any]:
    """One user's contribution: `rows` from `user_rows`, `train_videos` the train split's videos, `events`
    the events kept and `dropped_over_cap` those over the cap."""
    times = [t for columns in rows.values() for t in columns.get("timestamp", ())] or list(timestamps)
    out: Dict[str, Any] = {"events": events + dropped_over_cap, "users": 1, "dropped_over_cap": dropped_over_cap,
                           "negatives_short": short, "splits": {}}
    if times:
        out["first_timestamp"], out["last_timestamp"] = min(times), max(times)
    warm_user = TRAIN in rows
    for split, columns in rows.items():
        histogram = [0] * (history_length + 1)
        for history in columns["history"]:
            histogram[len(history)] += 1
        videos = columns["video_id"]
        positives = sum(columns["clicked"])
        out["splits"][SPLITS[split]] = {
            "rows": len(videos), "positives": positives, "users": 1, "history": histogram,
            "cold_video_rows": sum(1 for v in videos if v not in train_videos),
            "cold_user_rows": 0 if warm_user else len(videos)}
    return out


def _merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict):
        merged = dict(a)
        for k, v in b.items():
            merged[k] = _merge(merged[k], v, k) if k in merged else v
        return merged
    if isinstance(a, list):
        return [x + y for x, y in zip(a, b)]
    if key in _MIN_KEYS:
        return min(a, b)
    if key in _MAX_KEYS:
        return max(a, b)
    return a + b


def merge_statistics(parts: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """The sum of statistics (`user_statistics` or merged ones); `{}` for none."""
    out: Dict[str, Any] = {}
    for part in parts:
        out = _merge(out, part) if out else dict(part)
    return out


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def split_report(statistics: Mapping[str, Any], history_length: int) -> Dict[str, Any]:
    """The report's `log` and `splits` sections from merged statistics."""
    splits = {}
    for name in SPLITS:
        s = statistics.get("splits", {}).get(name)
        if not s:
            splits[name] = {"rows": 0}
            continue
        histogram = s["history"][:history_length + 1]
        rows = s["rows"]
        splits[name] = {
            "rows": rows, "positives": s["positives"], "negatives": rows - s["positives"],
            "click_rate": _share(s["positives"], rows), "users": s["users"],
            "cold_video_share": _share(s["cold_video_rows"], rows),
            "cold_user_share": _share(s["cold_user_rows"], rows),
            "history_length": {"mean": round(sum(n * c for n, c in enumerate(histogram)) / rows, 4) if rows else 0.0,
                               "empty_share": _share(histogram[0], rows), "histogram": histogram}}
    log = {k: statistics.get(k, 0) for k in ("events", "users", "dropped_unknown", "dropped_over_cap",
                                             "negatives_short")}
    # The first event read, over the cap or not: the time split's validation period is measured from it.
    first = statistics.get("first_event", statistics.get("first_timestamp"))
    if first is not None:
        log["first_timestamp"] = first
    if "last_timestamp" in statistics:
        log["last_timestamp"] = statistics["last_timestamp"]
    return {"log": log, "splits": splits}
