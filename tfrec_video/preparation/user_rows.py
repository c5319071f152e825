"""One user's events to impressions rows: time order, a cap, the history as of each event, negatives.

This is the whole per-user step of `tfrec-video prepare`, a plain function of
one user's events (the Beam pipeline calls it after a `GroupByKey` on the
user), so it is tested on its own.

* **Order.** Events are sorted by timestamp, and equal timestamps keep the
  input order (`EventBlock.order`).
* **Cap.** A user with more than `max_events` events keeps the latest
  `max_events` (`cap_events` trims while the events stream in, so such a user
  never holds more than twice the cap in memory); the dropped ones are
  counted, and are in no row and no history.
* **History** of an event: the videos the user clicked strictly before its
  timestamp, newest first (equal timestamps: the later in the input first), at
  most `history_length`. An event at the same timestamp is never in the
  history, nor is the event itself or anything later: the label cannot leak.
* **Negatives** (logs without `clicked`): `k` per event, with the event's
  user, timestamp, hour, device and history (`NegativeSampler`).
* **Hour**: the log's, or the UTC hour of the timestamp.

Example:

>>> import numpy as np
>>> from tfrec_video.preparation.events import EventBlock
>>> block = EventBlock(np.array(["u"] * 3, object), np.array(["a", "b", "c"], object),
...                    np.array([30, 10, 20]), np.arange(3), np.ones(3, np.int8), np.full(3, -1, np.int8), None)
>>> events, dropped = cap_events([block], max_events=10)
>>> rows, short = user_rows("u", events, np.zeros(3, np.int8), history_length=2)
>>> rows[0]["video_id"], rows[0]["history"]
(['b', 'c', 'a'], [[], ['b'], ['c', 'b']])
"""

from typing import AbstractSet, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from tfrec_video.preparation.events import EventBlock
from tfrec_video.preparation.negatives import NegativeSampler

SECONDS_PER_HOUR = 3600


def _latest(block: EventBlock, keep: int) -> EventBlock:
    """The `keep` latest events of `block`, in time order."""
    order = np.lexsort((block.order, block.timestamp))
    return block.take(order[-keep:] if keep < len(order) else order)


def cap_events(blocks: Iterable[EventBlock], max_events: Optional[int] = None,
               clicked: Optional[Set[str]] = None) -> Tuple[EventBlock, int]:
    """A user's events from `blocks` (any order), time-sorted and capped: `(events, number dropped)`.

    Memory stays under about twice `max_events` however many events stream in:
    whenever the held events pass that, only the latest `max_events` are kept.
    `clicked`, when given, gets the videos clicked in every event, the dropped
    ones included (a dropped click still must not become a negative): a set of
    distinct videos, at most the catalog.
    """
    held: List[EventBlock] = []
    size = total = 0
    for block in blocks:
        if clicked is not None:
            clicked.update(block.video_id[block.clicked == 1].tolist())
        held.append(block)
        size += len(block)
        total += len(block)
        if max_events is not None and size > 2 * max_events:
            held = [_latest(EventBlock.concat(held), max_events)]
            size = len(held[0])
    events = _latest(EventBlock.concat(held), max_events if max_events is not None else size)
    return events, total - len(events)


def histories(events: EventBlock, history_length: int) -> List[List[str]]:
    """Each event's history (see the module docstring), for time-sorted `events`."""
    n = len(events)
    out: List[List[str]] = [None] * n
    clicks: List[str] = []
    ts, clicked, videos = events.timestamp, events.clicked, events.video_id
    # Runs of equal timestamps: all of a run see the same history, and none of it.
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]]).tolist() + [n]
    for a, b in zip(starts[:-1], starts[1:]):
        history = clicks[:-history_length - 1:-1] if clicks else []
        for e in range(a, b):
            out[e] = history
        clicks.extend(videos[e] for e in range(a, b) if clicked[e])
    return out


def user_rows(user_id: str, events: EventBlock, split: np.ndarray, history_length: int = 20, negatives: int = 0,
              sampler: Optional[NegativeSampler] = None, rng: Optional[np.random.Generator] = None,
              clicked_ever: Optional[AbstractSet[str]] = None) -> Tuple[Dict[int, Dict[str, list]], int]:
    """The impressions rows of one user, by split.

    Args:
      user_id: the user.
      events: the user's events, time-sorted (`cap_events`).
      split: each event's split (`SplitRule.assign`).
      history_length: the most videos a history holds.
      negatives: negatives per event (0: none; the log has `clicked`).
      sampler: draws them; needed when `negatives > 0`.
      rng: the user's generator (`user_rng`); needed when `negatives > 0`.
      clicked_ever: the videos the user ever clicked, events over the cap included
        (`cap_events(..., clicked=)`); None: those clicked in `events`.

    Returns:
      `(rows, short)`: `rows` is `{split: {column: list}}` for the splits the
      user has rows in, with the columns `user_id`, `history`, `hour`,
      `video_id`, `clicked`, `timestamp`, and `device` when the log has it; a
      positive's negatives follow it. `short` counts the negatives that could
      not be drawn.
    """
    n = len(events)
    history = histories(events, history_length)
    hour = np.where(events.hour >= 0, events.hour, (events.timestamp // SECONDS_PER_HOUR) % 24).astype(np.int64)
    drawn, short = None, 0
    if negatives:
        if clicked_ever is None:
            clicked_ever = {v for v, c in zip(events.video_id.tolist(), events.clicked.tolist()) if c}
        drawn, short = sampler.sample(rng, n, negatives, clicked_ever)
    out: Dict[int, Dict[str, list]] = {}
    columns = ("user_id", "history", "hour", "video_id", "clicked", "timestamp") + (
        ("device",) if events.device is not None else ())
    videos, clicked, ts = events.video_id.tolist(), events.clicked.tolist(), events.timestamp.tolist()
    hours, devices = hour.tolist(), None if events.device is None else events.device.tolist()
    for e, s in enumerate(split.tolist()):
        rows = out.get(s)
        if rows is None:
            rows = out[s] = {c: [] for c in columns}
        extra = [v for v in drawn[e] if v is not None] if drawn is not None else []
        for video, label in [(videos[e], clicked[e])] + [(v, 0) for v in extra]:
            rows["user_id"].append(user_id)
            rows["history"].append(history[e])
            rows["hour"].append(hours[e])
            rows["video_id"].append(video)
            rows["clicked"].append(label)
            rows["timestamp"].append(ts[e])
            if devices is not None:
                rows["device"].append(devices[e])
    return out, short
