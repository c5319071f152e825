"""`NegativeSampler`: videos a user was not seen to click, for logs that hold only positives.

A watch log says what each user watched, never what they were shown and
passed over. `tfrec-video prepare` then adds `k` negatives to each event: the
same user, time, context and history, a sampled video, `clicked = 0`.

* `"uniform"`: every catalog video is equally likely.
* `"popularity"`: in proportion to a video's positives in the *training
  split* only, so the test period's popularity does not leak into training
  rows (videos with no training positive are never drawn).

A negative is never a video the user clicked at any time in the log (not
only before the event: a video clicked later is not a negative of an earlier
row either), and the `k` negatives of one event are distinct. When fewer than
`k` such videos remain (a tiny catalog, a user who clicked most of it), the
event gets fewer and `short` counts the missing ones.

Draws are seeded by the user (`user_rng`): the same log gives the same
negatives on any runner with any number of workers.

Example:

>>> sampler = NegativeSampler(["a", "b", "c", "d"])
>>> rows, short = sampler.sample(user_rng(0, "u1"), events=2, k=2, exclude={"a"})
>>> rows.shape, short, "a" in set(rows.ravel())
((2, 2), 0, False)
"""

import zlib
from typing import AbstractSet, Optional, Sequence, Tuple

import numpy as np

from tfrec_video.errors import ConfigError

SAMPLING = ("uniform", "popularity")
# Candidates drawn per wanted negative before a row is topped up one by one.
_OVERDRAW = 3


def user_rng(seed: int, user_id: str) -> np.random.Generator:
    """The generator of one user's draws: depends only on `seed` and the id (not on the worker)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(user_id.encode("utf-8"))])


class NegativeSampler:
    """Draws negatives from `video_ids`, uniformly or in proportion to `counts`.

    Args:
      video_ids: the videos a negative may be.
      counts: per video, its weight (training-split positives) for
        popularity sampling; None samples uniformly.
    """

    def __init__(self, video_ids: Sequence[str], counts: Optional[Sequence[float]] = None):
        ids = np.asarray(list(video_ids), dtype=object)
        if counts is not None:
            weights = np.asarray(counts, np.float64)
            if weights.shape != ids.shape:
                raise ConfigError(f"NegativeSampler: {len(ids)} videos but {weights.size} counts")
            keep = weights > 0
            ids, weights = ids[keep], weights[keep]
            self._cumulative = np.cumsum(weights) / weights.sum() if weights.size else None
        else:
            self._cumulative = None
        self.video_ids = ids
        self._index = {v: i for i, v in enumerate(ids.tolist())}

    def __len__(self):
        return len(self.video_ids)

    def _draw(self, rng: np.random.Generator, size) -> np.ndarray:
        if self._cumulative is None:
            return rng.integers(0, len(self.video_ids), size=size)
        return np.minimum(np.searchsorted(self._cumulative, rng.random(size), side="right"),
                          len(self.video_ids) - 1)

    def sample(self, rng: np.random.Generator, events: int, k: int,
               exclude: AbstractSet[str]) -> Tuple[np.ndarray, int]:
        """`(videos [events, k] object array with None where a row is short, short count)`."""
        out = np.full((events, k), None, dtype=object)
        if not events or not k or not len(self.video_ids):
            return out, events * k if len(self.video_ids) == 0 else 0
        banned = np.zeros(len(self.video_ids), bool)
        banned[[self._index[v] for v in exclude if v in self._index]] = True
        available = int((~banned).sum())
        if available == 0:
            return out, events * k
        want = min(k, available)
        draws = self._draw(rng, (events, _OVERDRAW * k))
        short = 0
        for row in range(events):
            picked = []
            for c in draws[row].tolist():
                if not banned[c] and c not in picked:
                    picked.append(c)
                    if len(picked) == want:
                        break
            if len(picked) < want:
                # Rare: the over-draw hit mostly clicked or repeated videos. Top up from the allowed videos in
                # a random order (uniform among them, whatever the sampling).
                for c in rng.permutation(np.flatnonzero(~banned)).tolist():
                    if c not in picked:
                        picked.append(c)
                        if len(picked) == want:
                            break
            out[row, :len(picked)] = self.video_ids[picked]
            short += k - len(picked)
        return out, short
