"""Users' events to impressions rows: time order, a cap, the history as of each event, negatives.

This is the whole per-user step of `tfrec-video prepare`, a plain function of
a user's events: `user_rows` for one user, `bucket_rows` for a bucket of users
at once (what the Beam pipeline calls after grouping by user bucket, with the
same rows for each user), so it is tested on its own.

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

from typing import AbstractSet, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

import numpy as np

from tfrec_video.preparation.buckets import bucket_events
from tfrec_video.preparation.events import EventBlock
from tfrec_video.preparation.negatives import NegativeSampler

SECONDS_PER_HOUR = 3600


def cap_events(blocks: Iterable[EventBlock], max_events: Optional[int] = None,
               clicked: Optional[Set[str]] = None) -> Tuple[EventBlock, int]:
    """One user's events from `blocks` (any order), time-sorted and capped: `(events, number dropped)`.

    The bucket step for a single user (`buckets.bucket_events`), compacting whenever more than twice
    `max_events` are held, so memory stays under about twice the cap however many events stream in.
    `clicked`, when given, gets the videos clicked in every event, the dropped ones included (a dropped
    click still must not become a negative).
    """
    merged = bucket_events(blocks, max_events, track_clicked=clicked is not None,
                           hold=None if max_events is None else 2 * max_events)
    events = merged.events
    if clicked is not None:
        clicked.update(events.video_id[events.clicked == 1].tolist())
        for videos in merged.clicked.values():
            clicked.update(videos)
    return events, int(merged.dropped.sum())


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


class Rows(NamedTuple):
    """The rows of a run of users' events (`bucket_rows`): each column has a value per row.

    `event` is the event a row comes from (its index in the events), so the
    event's columns (user, time, hour, device, split) are `column[event]`.
    """
    event: np.ndarray  # int64
    video_id: np.ndarray  # object (str)
    clicked: np.ndarray  # int64
    history: List[List[str]]
    short: np.ndarray  # per user: negatives that could not be drawn


def event_hours(events: EventBlock) -> np.ndarray:
    """Each event's hour: the log's, or the UTC hour of its timestamp."""
    return np.where(events.hour >= 0, events.hour, (events.timestamp // SECONDS_PER_HOUR) % 24).astype(np.int64)


def bucket_rows(events: EventBlock, starts: np.ndarray, history_length: int = 20, negatives: int = 0,
                sampler: Optional[NegativeSampler] = None,
                rng_of: Optional[Callable[[str], np.random.Generator]] = None,
                clicked_ever: Optional[Mapping[str, AbstractSet[str]]] = None) -> Rows:
    """The rows of several users at once: `events` sorted by user then time, user `i` at `starts[i]:starts[i+1]`.

    Each user's rows are exactly `user_rows`' (histories and negatives are drawn per user, with
    `rng_of(user)`); `clicked_ever` maps a user to the videos they ever clicked when that is more than
    their `events` show (a cap dropped some).
    """
    n = len(events)
    history: List[List[str]] = []
    drawn, short = [], np.zeros(len(starts) - 1, np.int64)
    for i, (a, b) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist())):
        mine = events.take(slice(a, b))
        history.extend(histories(mine, history_length))
        if negatives:
            user = str(events.user_id[a])
            clicked = (clicked_ever or {}).get(user)
            if clicked is None:
                clicked = {v for v, c in zip(mine.video_id.tolist(), mine.clicked.tolist()) if c}
            picked, short[i] = sampler.sample(rng_of(user), b - a, negatives, clicked)
            drawn.append(picked)
    if not negatives:
        return Rows(np.arange(n, dtype=np.int64), events.video_id, events.clicked.astype(np.int64), history, short)
    # Row-major over [event, (the event, its negatives)]: a positive then its negatives, events in order.
    videos = np.empty((n, 1 + negatives), object)
    videos[:, 0] = events.video_id
    videos[:, 1:] = np.concatenate(drawn) if drawn else np.empty((0, negatives), object)
    labels = np.zeros((n, 1 + negatives), np.int64)
    labels[:, 0] = events.clicked
    present = ~np.equal(videos, None)
    event = np.repeat(np.arange(n, dtype=np.int64)[:, None], 1 + negatives, axis=1)[present]
    return Rows(event, videos[present], labels[present], [history[e] for e in event.tolist()], short)


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
    rows = bucket_rows(events, np.array([0, len(events)]), history_length, negatives, sampler, lambda _: rng,
                       None if clicked_ever is None else {str(user_id): clicked_ever})
    event = rows.event
    columns = {"user_id": np.full(len(event), user_id, object), "history": rows.history,
               "hour": event_hours(events)[event], "video_id": rows.video_id, "clicked": rows.clicked,
               "timestamp": events.timestamp[event]}
    if events.device is not None:
        columns["device"] = events.device[event]
    row_split = np.asarray(split)[event]
    out: Dict[int, Dict[str, list]] = {}
    for s in sorted(set(row_split.tolist())):
        keep = np.flatnonzero(row_split == s).tolist()
        out[s] = {name: [values[i] for i in keep] if isinstance(values, list) else values[keep].tolist()
                  for name, values in columns.items()}
    return out, int(rows.short.sum())
