"""What `prepare_report.json` says: counts, click rates, cold-start shares, history lengths.

Statistics are summed per bucket of users (`bucket_statistics`) and merged in
any order (`merge_statistics` is associative and commutative, a Beam
combiner), then turned into the report (`split_report`). Per split:

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

>>> import numpy as np
>>> one = np.array([0])  # one row, of user 0, in the train split, clicked, with an empty history
>>> a = bucket_statistics(one, one, np.array([1]), one, np.array([False]), np.array([True]), np.array([1]),
...                       np.array([0]), np.array([0]), np.array([100]), 2)
>>> report = split_report(merge_statistics([a, a]), 2)
>>> report["splits"]["train"]["rows"], report["splits"]["train"]["history_length"]["histogram"]
(2, [2, 0, 0])
"""

from typing import Any, Dict, Iterable, Mapping

import numpy as np

from tfrec_video.preparation.splits import SPLITS

STATISTICS_FILE = "_statistics.json"  # The pipeline's merged statistics, read back into the report.
ERROR_FILE = "_error.json"  # The first bad input row the reading step met, raised by the driver.
_MIN_KEYS = ("first_timestamp",)
_MAX_KEYS = ("last_timestamp",)


def bucket_statistics(rows_split: np.ndarray, rows_user: np.ndarray, clicked: np.ndarray, history_lengths: np.ndarray,
                      cold_video: np.ndarray, user_has_train: np.ndarray, kept: np.ndarray, dropped: np.ndarray,
                      short: np.ndarray, timestamps: np.ndarray, history_length: int) -> Dict[str, Any]:
    """The merged `user_statistics` of a bucket's users, from its rows' columns at once.

    Per row: its split, its user (index), `clicked`, its history's length, whether its video is cold (the
    train split never shows it). Per user: whether they have a train event, events kept and dropped by the
    cap, negatives short. `timestamps`: the kept events'.
    """
    out: Dict[str, Any] = {"events": int(kept.sum() + dropped.sum()), "users": len(kept),
                           "dropped_over_cap": int(dropped.sum()), "negatives_short": int(short.sum()), "splits": {}}
    if len(timestamps):
        out["first_timestamp"], out["last_timestamp"] = int(timestamps.min()), int(timestamps.max())
    cold_user = ~user_has_train[rows_user]
    for split in np.unique(rows_split).tolist():
        mine = rows_split == split
        out["splits"][SPLITS[split]] = {
            "rows": int(mine.sum()), "positives": int(clicked[mine].sum()),
            "users": int(np.unique(rows_user[mine]).size),
            "history": np.bincount(history_lengths[mine], minlength=history_length + 1).tolist(),
            "cold_video_rows": int(cold_video[mine].sum()), "cold_user_rows": int(cold_user[mine].sum())}
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
