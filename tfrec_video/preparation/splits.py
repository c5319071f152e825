"""`SplitRule`: which split (train, validation, test) each event of a user lands in.

Three rules, each deterministic (the same log gives the same splits on any
runner, with any number of workers):

* `"time"`: events at or after `test_from` are the test split. The
  `validation_fraction` of the training period just before `test_from` (by
  time: `test_from - fraction * (test_from - first event)`) is the validation
  split: the latest training-period events, as the built-in dataset does.
* `"leave-one-out"`: a user's last event is test (when the user has at least
  two) and the one before is validation (at least three); a user with one event
  is all train, so every test user has training data.
* `"random"`: each event is test with probability `test_fraction` and
  validation with `validation_fraction`, by a seeded hash of the user and the
  event's place in the input (not Python's `hash`, which is salted per process).

"Last" is by timestamp, and among equal timestamps by input order.

Example:

>>> rule = SplitRule("leave-one-out")
>>> rule.assign(np.array([10, 20, 30]), np.array([0, 1, 2]), "u1").tolist()
[0, 1, 2]
"""

import dataclasses
import datetime
import zlib
from typing import Optional, Union

import numpy as np

from tfrec_video.errors import ConfigError

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_KINDS = ("time", "leave-one-out", "random")


def parse_time(value: Union[str, int, float, None], field: str = "test_from") -> Optional[int]:
    """Seconds since the epoch from an int or ISO 8601 text (`2026-11-01`, UTC unless it has an offset)."""
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{field}: {value!r} is not a time; expected ISO 8601 (2026-11-01 or "
                          "2026-11-01T08:00:00) or seconds since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def _unit_hash(seed: int, user_id: str, order: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) values from (seed, user, order): a splitmix64 finaliser over crc32(user) and order."""
    base = np.uint64(zlib.crc32(f"{seed}:{user_id}".encode("utf-8")))
    with np.errstate(over="ignore"):
        z = order.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """How events are split.

    Args:
      kind: `"time"`, `"leave-one-out"` or `"random"`.
      test_from: `"time"` only: the first test time (ISO 8601 text or epoch seconds).
      validation_fraction: `"time"`: the fraction of the training period (by
        time) held out as validation; `"random"`: the probability of an event
        being validation. Unused by `"leave-one-out"`.
      test_fraction: `"random"` only: the probability of an event being test.
      seed: `"random"` only: the hash seed.
    """
    kind: str = "time"
    test_from: Optional[Union[str, int]] = None
    validation_fraction: float = 0.0
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"split must be one of {SPLIT_KINDS}, got {self.kind!r}")
        if self.kind == "time" and self.test_from is None:
            raise ConfigError("split 'time' needs --test-from (the first test time, e.g. 2026-11-01)")
        if self.kind != "time" and self.test_from is not None:
            raise ConfigError(f"--test-from is for split 'time', not {self.kind!r}")
        parse_time(self.test_from)
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.kind == "random" and (not 0.0 < float(self.test_fraction) < 1.0
                                      or self.test_fraction + self.validation_fraction >= 1.0):
            raise ConfigError(f"test_fraction must be in (0, 1) with test_fraction + validation_fraction < 1, "
                              f"got {self.test_fraction!r} and {self.validation_fraction!r}")

    @property
    def test_seconds(self) -> Optional[int]:
        return parse_time(self.test_from)

    def validation_from(self, first_timestamp: int) -> Optional[int]:
        """`"time"`: the first validation time, given the log's first event time (None: no validation)."""
        if self.kind != "time" or not self.validation_fraction:
            return None
        start = self.test_seconds
        return int(start - np.floor(self.validation_fraction * max(start - int(first_timestamp), 0)))

    def assign(self, timestamps: np.ndarray, order: np.ndarray, user_id: str,
               validation_from: Optional[int] = None) -> np.ndarray:
        """The split (`TRAIN`, `VALIDATION`, `TEST`) of each of a user's events, given in time order."""
        n = len(timestamps)
        split = np.zeros(n, np.int8)
        if self.kind == "time":
            if validation_from is not None:
                split[timestamps >= validation_from] = VALIDATION
            split[timestamps >= self.test_seconds] = TEST
        elif self.kind == "leave-one-out":
            if n >= 2:
                split[-1] = TEST
            if n >= 3:
                split[-2] = VALIDATION
        else:
            u = _unit_hash(self.seed, user_id, order)
            split[u < self.test_fraction + self.validation_fraction] = VALIDATION
            split[u < self.test_fraction] = TEST
        return split
