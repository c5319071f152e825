"""User buckets: the unit `prepare` groups events by, many users at a time.

Grouping by user makes one pipeline element per user, and a runner's cost is
per element (encoding, decoding, bookkeeping): measured on 1M events, 80 % of
the in-process run. `prepare` groups by *bucket* instead (`crc32(user) %
buckets`, about `EVENTS_PER_BUCKET` events each), and each bucket holds its
users' events as one `EventBlock` sorted by user, then time, then input order.
The per-user steps (`cap_events`' rule, `SplitRule.assign`, `user_rows`) run
on each user's slice, exactly as on a user alone, so the rows do not depend on
the number of buckets.

**Memory.** A bucket's events are compacted while they stream in: whenever
more than `2 * EVENTS_PER_BUCKET` are held past the last compaction, each user
keeps only their latest `max_events` (the cap), so a user with millions of
events holds at most about `2 * max(max_events, EVENTS_PER_BUCKET)` events of
memory, not millions.

Example:

>>> import numpy as np
>>> from tfrec_video.preparation.events import EventBlock
>>> block = EventBlock(np.array(["b", "a", "b"], object), np.array(["x", "y", "z"], object),
...                    np.array([5, 7, 1]), np.arange(3), np.ones(3, np.int8), np.full(3, -1, np.int8), None)
>>> bucket = bucket_events([block], max_events=10)
>>> [(user, bucket.events.take(slice(a, b)).video_id.tolist()) for user, a, b in bucket.users()]
[('a', ['y']), ('b', ['z', 'x'])]
"""

import math
import zlib
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from tfrec_video.preparation.events import EventBlock

# About this many events a bucket: a few MB of columns, and few pipeline elements.
EVENTS_PER_BUCKET = 100_000


def bucket_count(events: int) -> int:
    """Buckets for a log of about `events` events."""
    return max(1, math.ceil(events / EVENTS_PER_BUCKET))


def user_hashes(users: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`(crc32 of each event's user, the distinct users)` for `users` (object array); one crc32 per user."""
    unique, inverse = np.unique(users.astype(str), return_inverse=True)
    hashes = np.fromiter((zlib.crc32(u.encode("utf-8")) for u in unique.tolist()), np.int64, len(unique))
    return hashes[inverse], unique


def split_by_bucket(block: EventBlock, buckets: int) -> Iterator[Tuple[int, EventBlock]]:
    """`(bucket, events of that bucket)` for each bucket `block`'s users fall in."""
    hashes, _ = user_hashes(block.user_id)
    bucket = hashes % buckets
    order = np.argsort(bucket, kind="stable")
    sorted_buckets = bucket[order]
    bounds = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1], True]).tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(sorted_buckets[a]), block.take(order[a:b])


def _sorted(block: EventBlock) -> EventBlock:
    return block.take(np.lexsort((block.order, block.timestamp, block.user_id.astype(str))))


def _cap(block: EventBlock, max_events: Optional[int]) -> Tuple[EventBlock, np.ndarray]:
    """`block` sorted by user then time, each user's latest `max_events` kept; and the kept/dropped mask."""
    block = _sorted(block)
    keep = np.ones(len(block), bool)
    if max_events is not None and len(block):
        users = block.user_id
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], len(block)]
        # Position counted from each user's end: the latest event is 0.
        from_end = np.repeat(ends, ends - starts) - np.arange(len(block)) - 1
        keep = from_end < max_events
    return block, keep


class BucketEvents(NamedTuple):
    """A bucket's events, sorted by user, time and input order, capped; with each user's bookkeeping.

    Attributes:
      events: the kept events.
      starts: the first row of each user in `events` (and `len(events)` last).
      dropped: per user, events over the cap.
      clicked: per user with dropped events (only when asked for), the videos clicked in all of them.
    """
    events: EventBlock
    starts: np.ndarray
    dropped: np.ndarray
    clicked: Dict[str, Set[str]]

    def users(self) -> Iterator[Tuple[str, int, int]]:
        """`(user, first row, end row)` of each user."""
        starts = self.starts.tolist()
        for a, b in zip(starts[:-1], starts[1:]):
            yield str(self.events.user_id[a]), a, b


def bucket_events(blocks: Iterable[EventBlock], max_events: Optional[int] = None,
                  track_clicked: bool = False, hold: Optional[int] = None) -> BucketEvents:
    """Merges a bucket's blocks (any order) into `BucketEvents`, capping users while they stream in.

    `track_clicked`: record, for users over the cap, every video they clicked (dropped events included), so
    that a click over the cap never becomes a negative. `hold`: compact whenever more events than this are
    held (default `2 * max(max_events, EVENTS_PER_BUCKET)`).
    """
    if hold is None and max_events is not None:
        hold = 2 * max(max_events, EVENTS_PER_BUCKET)
    held: List[EventBlock] = []
    size = 0
    dropped: Dict[str, int] = {}
    clicked: Dict[str, Set[str]] = {}

    def compact(final: bool) -> EventBlock:
        block, keep = _cap(EventBlock.concat(held), max_events)
        if not keep.all():
            gone = block.take(~keep)
            names, counts = np.unique(gone.user_id.astype(str), return_counts=True)
            for name, count in zip(names.tolist(), counts.tolist()):
                dropped[name] = dropped.get(name, 0) + count
            if track_clicked:
                lost = gone.take(gone.clicked == 1)
                for user, video in zip(lost.user_id.tolist(), lost.video_id.tolist()):
                    clicked.setdefault(user, set()).add(video)
            block = block.take(keep)
        return block

    for block in blocks:
        held.append(block)
        size += len(block)
        if max_events is not None and size > hold:
            held = [compact(False)]
            size = len(held[0])
    if not held:
        raise ValueError("bucket_events: no blocks")
    events = compact(True)
    users = events.user_id
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    names = users[starts].tolist()
    if track_clicked:  # A user with dropped clicks: add the kept ones, for the whole set.
        for name, a, b in zip(names, starts.tolist(), np.r_[starts[1:], len(events)].tolist()):
            if name in clicked:
                clicked[name].update(v for v, c in zip(events.video_id[a:b].tolist(), events.clicked[a:b].tolist())
                                     if c)
    return BucketEvents(events, np.r_[starts, len(events)].astype(np.int64),
                        np.array([dropped.get(n, 0) for n in names], np.int64), clicked)
