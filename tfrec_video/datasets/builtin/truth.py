"""The planted truth of the built-in dataset: the click model and oracle scoring.

The built-in generator (`tfrec_video.datasets.builtin`) draws every click from a
known probability. This module holds that probability's formula (the generator
calls the same functions, so the truth cannot drift from the data) and
`GroundTruth`, which reloads the latent variables from a generated dataset's
`truth/` folder so evaluation can compute what a perfect model would score:

* **oracle AUC**: the AUC of the true click probability on the test impressions
  (`oracle_auc`); no model can beat it in expectation.
* **oracle Recall@K**: rank the catalog for each test click by the true logits
  (`GroundTruth.click_logits`, masked with `GroundTruth.published_before`).

The true click logit of user `u`, video `v` in context (`device`, `hour`) is

    logit = click_bias
            + click_scale * cos(theta_u, theta_v)          # topic affinity, in [0, 1]
            + user_bias_u                                  # some users click more
            + popularity_click_weight * zpop_v             # popular videos are a bit better
            + context_effect * (DEVICE_DURATION_COEF[device] * zdur_v + HOUR_COEF[hour])

where `theta_u`, `theta_v` are topic mixtures, `zpop_v` is the standardised
log-popularity, and `zdur_v = (log(duration_s) - log(300)) / 1` is the
standardised log-duration (so a TV boosts long videos and a phone short ones).
A missing device or hour contributes 0. The click probability is
`sigmoid(logit)`.

Nothing under `truth/` is ever read by a model: it is only for evaluation.

Example:

>>> from tfrec_video.datasets import GroundTruth, oracle_auc   # doctest: +SKIP
>>> gt = GroundTruth.load("/tmp/builtin")                      # doctest: +SKIP
>>> logits = gt.click_logits(["u00000", "u00001"], device="tv")  # doctest: +SKIP
>>> oracle_auc("/tmp/builtin")                                 # doctest: +SKIP
0.78
"""

import copy
import json
import os
from typing import Dict, Optional, Sequence, Union

import numpy as np

from tfrec_video.evaluation.metrics import auc  # noqa: F401  (re-exported: truth.auc)

DEVICES = ("phone", "tablet", "tv", "desktop")

# How strongly each device favours long (positive) or short (negative) videos,
# per unit of standardised log-duration: people watch long videos on a TV and
# short ones on a phone.
DEVICE_DURATION_COEF = {"phone": -0.5, "tablet": 0.0, "tv": 1.0, "desktop": 0.25}

# Hour-of-day effect on the click logit: evenings are leisure time, nights are
# idle scrolling.
HOUR_COEF = np.array(
    [-0.3] * 6          # 00-05: night
    + [0.0] * 12        # 06-17: day
    + [0.3] * 5         # 18-22: evening
    + [0.0],            # 23
    dtype=np.float64,
)

# Standardisation of log-duration used by the context term.
DURATION_LOG_CENTER = float(np.log(300.0))
DURATION_LOG_SCALE = 1.0

_DEVICE_COEF_ARRAY = np.array([DEVICE_DURATION_COEF[d] for d in DEVICES] + [0.0], dtype=np.float64)
_HOUR_COEF_ARRAY = np.concatenate([HOUR_COEF, [0.0]])

TRUTH_DIR = "truth"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def standardized_log_duration(duration_s: np.ndarray) -> np.ndarray:
    """`zdur`: the standardised log-duration the context term multiplies."""
    d = np.asarray(duration_s, dtype=np.float32).astype(np.float64)
    return (np.log(d) - DURATION_LOG_CENTER) / DURATION_LOG_SCALE


def device_index(device) -> np.ndarray:
    """Maps device names (or `None`) to indices into `DEVICES`; `None` and `""` map to -1 (no context)."""
    if device is None:
        return np.array(-1)
    arr = np.asarray(device, dtype=object)
    lookup = {d: i for i, d in enumerate(DEVICES)}
    lookup[""] = -1
    lookup[None] = -1

    def one(d):
        if isinstance(d, bytes):
            d = d.decode("utf-8")
        if d not in lookup:
            raise ValueError(f"Unknown device {d!r}; expected one of {DEVICES}.")
        return lookup[d]

    return np.vectorize(one, otypes=[np.int64])(arr) if arr.ndim else np.array(one(arr.item()))


def _hour_index(hour) -> np.ndarray:
    if hour is None:
        return np.array(-1)
    h = np.asarray(hour, dtype=np.int64)
    if np.any((h < -1) | (h > 23)):
        raise ValueError(f"hour must be in 0..23 (or -1 for unknown), got values {np.unique(h[(h < -1) | (h > 23)])}.")
    return h


def context_term(zdur: np.ndarray, device_idx: np.ndarray, hour: np.ndarray, context_effect: float) -> np.ndarray:
    """The context part of the logit; broadcasts `zdur` against `device_idx` / `hour`.

    Args:
      zdur: standardised log-durations.
      device_idx: indices into `DEVICES`, -1 for unknown (no effect).
      hour: hours 0-23, -1 for unknown (no effect).
      context_effect: overall strength (`BuiltinConfig.context_effect`).
    """
    dev = _DEVICE_COEF_ARRAY[np.asarray(device_idx)]   # index -1 picks the trailing 0.0
    hr = _HOUR_COEF_ARRAY[np.asarray(hour)]
    return context_effect * (dev * zdur + hr)


def pair_logits(user_unit, user_bias, video_unit, zpop, zdur, device_idx, hour, params: Dict[str, float]) -> np.ndarray:
    """True click logits of aligned (user, video, context) rows.

    Args:
      user_unit: [n, K] L2-normalised user topic preferences.
      user_bias: [n] per-user click propensity offsets.
      video_unit: [n, K] L2-normalised video topic mixtures.
      zpop: [n] standardised log-popularity of the videos.
      zdur: [n] standardised log-duration of the videos.
      device_idx: [n] device indices (-1 unknown).
      hour: [n] hours (-1 unknown).
      params: `click_bias`, `click_scale`, `popularity_click_weight`, `context_effect`.

    Returns:
      float64 [n] logits.
    """
    affinity = np.einsum("nk,nk->n", np.asarray(user_unit, np.float64), np.asarray(video_unit, np.float64))
    return (
        params["click_bias"]
        + params["click_scale"] * affinity
        + np.asarray(user_bias, np.float64)
        + params["popularity_click_weight"] * np.asarray(zpop, np.float64)
        + context_term(np.asarray(zdur, np.float64), device_idx, hour, params["context_effect"])
    )


def watch_logits(user_unit, video_unit, quality, zdur, params: Dict[str, float]) -> np.ndarray:
    """True watch logits of aligned (user, video) rows: `sigmoid` of them is a click's expected watch fraction.

    Args:
      user_unit: [n, K] L2-normalised user topic preferences.
      video_unit: [n, K] L2-normalised video topic mixtures.
      quality: [n] the videos' quality latent (`N(0, 1)`, independent of popularity and clicks).
      zdur: [n] standardised log-duration of the videos.
      params: `BuiltinConfig.watch_params()`.

    Returns:
      float64 [n] logits.
    """
    affinity = np.einsum("nk,nk->n", np.asarray(user_unit, np.float64), np.asarray(video_unit, np.float64))
    return (params["watch_bias"] + params["watch_affinity_scale"] * affinity
            + params["watch_quality_scale"] * np.asarray(quality, np.float64)
            - params["watch_duration_scale"] * np.asarray(zdur, np.float64))


def _read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


class GroundTruth:
    """The latent variables and click model of a generated built-in dataset.

    Load it with `GroundTruth.load(dataset_dir)`. Arrays are in catalog order
    (`video_ids`) and user order (`user_ids`).

    Attributes:
      video_ids: [n_videos] video ids in catalog order.
      user_ids: [n_users] user ids.
      video_topics: [n_videos, K] topic mixtures (rows sum to 1).
      user_topics: [n_users, K] topic preferences (rows sum to 1).
      dominant_topic: [n_videos] argmax of `video_topics`.
      popularity: [n_videos] popularity (exposure weight is `popularity ** popularity_exponent`).
      publish_time: [n_videos] publish timestamps (seconds since the epoch).
      cold_start: [n_videos] True for videos published inside the test period.
      params: the click-model parameters and time splits (`truth.json`; `time`
        holds the first second of the test period, `split`, and of the
        validation period, `validation`, when there is one; a daily dataset's
        `days` holds its schedule's parameters).
      first_active_day: [n_users] each user's first-active day of the window
        (a daily dataset, `BuiltinConfig.days`), or None.
      topic_names: names of the K topics.

    Example:

    >>> gt = GroundTruth.load(path)                                  # doctest: +SKIP
    >>> logits = gt.click_logits(["u00003"], hour=20, device="tv")   # doctest: +SKIP
    >>> top10 = gt.video_ids[np.argsort(-logits[0])[:10]]           # doctest: +SKIP
    """

    def __init__(self, root: str, params: dict, videos: Dict[str, np.ndarray], users: Dict[str, np.ndarray],
                 manifest: Optional[dict] = None):
        self.root = root
        self.params = params
        self.manifest = manifest or {}
        self.video_ids = videos["video_id"].astype(object)
        self.video_topics = videos["theta"]
        self.video_unit = videos["theta_unit"]
        self.dominant_topic = videos["dominant_topic"]
        self.popularity = videos["popularity"]
        self.zpop = videos["zpop"]
        self.zdur = videos["zdur"]
        self.quality = videos.get("quality")  # None in datasets written before watch time
        self.publish_time = videos["publish_time"]
        self.cold_start = videos["is_cold_start"]
        self.user_ids = users["user_id"].astype(object)
        self.user_topics = users["theta"]
        self.user_unit = users["theta_unit"]
        self.user_bias = users["user_bias"]
        self.first_active_day = users.get("first_active_day")
        self.topic_names = list(params.get("topics", []))
        self._video_index = None
        self._user_index = None
        self._test_day: Optional[int] = None

    @classmethod
    def load(cls, dataset_dir: str) -> "GroundTruth":
        """Reads `dataset_dir/truth/` (and `dataset.json`) of a generated dataset.

        Args:
          dataset_dir: the folder `generate` wrote (or `ensure_builtin` returned).

        Returns:
          A `GroundTruth`.
        """
        root = os.fspath(dataset_dir)
        tdir = os.path.join(root, TRUTH_DIR)
        if not os.path.isdir(tdir):
            raise FileNotFoundError(
                f"{root!r} has no {TRUTH_DIR}/ folder: ground truth exists only for the built-in dataset "
                "(generate it with `tfrec-video generate-data` or tfrec_video.datasets.ensure_builtin)."
            )
        params = _read_json(os.path.join(tdir, "truth.json"))
        videos = {name: np.load(os.path.join(tdir, "videos", name + ".npy"), allow_pickle=False)
                  for name in params["video_arrays"]}
        users = {name: np.load(os.path.join(tdir, "users", name + ".npy"), allow_pickle=False)
                 for name in params["user_arrays"]}
        manifest_path = os.path.join(root, "dataset.json")
        manifest = _read_json(manifest_path) if os.path.exists(manifest_path) else None
        return cls(root, params, videos, users, manifest)

    # -- lookups -----------------------------------------------------------------

    def _index(self, ids, which: str) -> np.ndarray:
        if which == "video":
            if self._video_index is None:
                self._video_index = {v: i for i, v in enumerate(self.video_ids)}
            table = self._video_index
        else:
            if self._user_index is None:
                self._user_index = {u: i for i, u in enumerate(self.user_ids)}
            table = self._user_index
        out = np.empty(len(ids), dtype=np.int64)
        for i, x in enumerate(ids):
            if isinstance(x, bytes):
                x = x.decode("utf-8")
            try:
                out[i] = table[x]
            except KeyError:
                raise KeyError(f"Unknown {which} id {x!r}: not in this dataset's ground truth.") from None
        return out

    def video_index(self, video_ids: Sequence[str]) -> np.ndarray:
        """Catalog positions of `video_ids` (KeyError for unknown ids)."""
        return self._index(np.atleast_1d(np.asarray(video_ids, dtype=object)), "video")

    def user_index(self, user_ids: Sequence[str]) -> np.ndarray:
        """Positions of `user_ids` in `user_ids` (KeyError for unknown ids)."""
        return self._index(np.atleast_1d(np.asarray(user_ids, dtype=object)), "user")

    # -- the click model -----------------------------------------------------------

    def click_logits(self, user_ids: Sequence[str], video_ids: Optional[Sequence[str]] = None,
                     hour: Union[None, int, Sequence[int]] = None,
                     device: Union[None, str, Sequence[str]] = None) -> np.ndarray:
        """True click logits of every (user, video) pair.

        Args:
          user_ids: [n_users] user ids.
          video_ids: [n_videos] video ids; `None` means the whole catalog in
            catalog order (`self.video_ids`).
          hour: `None` (no hour effect), one hour for all users, or one per user.
          device: `None` (no device effect), one device name, or one per user.

        Returns:
          float64 [n_users, n_videos] logits. Mask unpublished videos yourself
          with `published_before` when ranking at a given time.
        """
        u = self.user_index(user_ids)
        v = slice(None) if video_ids is None else self.video_index(video_ids)
        p = self.params["click"]
        vu = np.asarray(self.video_unit[v], np.float64)
        uu = np.asarray(self.user_unit[u], np.float64)
        dev = device_index(device)
        hr = _hour_index(hour)
        if dev.ndim:
            dev = dev[:, None]
        if hr.ndim:
            hr = hr[:, None]
        zdur = np.asarray(self.zdur[v], np.float64)[None, :]
        return (
            p["click_bias"]
            + p["click_scale"] * (uu @ vu.T)
            + np.asarray(self.user_bias[u], np.float64)[:, None]
            + p["popularity_click_weight"] * np.asarray(self.zpop[v], np.float64)[None, :]
            + context_term(zdur, dev, hr, p["context_effect"])
        )

    def click_prob(self, user_ids, video_ids=None, hour=None, device=None) -> np.ndarray:
        """`sigmoid(click_logits(...))`: true click probabilities, [n_users, n_videos]."""
        return sigmoid(self.click_logits(user_ids, video_ids, hour=hour, device=device))

    def _split_arrays(self, key: str, split: str) -> np.ndarray:
        # A dataset without a validation split has no entry for it: no rows.
        files = self.params[key].get(split, [])
        parts = [np.load(os.path.join(self.root, f), allow_pickle=False) for f in files]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _split_prob(self, split: str) -> np.ndarray:
        return self._split_arrays("click_prob_files", split)

    def watch_mean(self, user_ids: Sequence[str], video_ids: Optional[Sequence[str]] = None) -> np.ndarray:
        """A click's true expected watch fraction for every (user, video) pair: `[n_users, n_videos]`.

        `video_ids=None` is the whole catalog in catalog order. The expected watch *time* of showing a video
        is `click_prob * watch_mean * duration_s`.
        """
        if self.quality is None or "watch" not in self.params:
            raise ValueError("this dataset was generated before watch time (builtin-3): generate it again")
        u = self.user_index(user_ids)
        v = slice(None) if video_ids is None else self.video_index(video_ids)
        p = self.params["watch"]
        affinity = np.asarray(self.user_unit[u], np.float64) @ np.asarray(self.video_unit[v], np.float64).T
        logits = (p["watch_bias"] + p["watch_affinity_scale"] * affinity
                  + p["watch_quality_scale"] * np.asarray(self.quality[v], np.float64)[None, :]
                  - p["watch_duration_scale"] * np.asarray(self.zdur[v], np.float64)[None, :])
        return sigmoid(logits)

    def test_watch_mean(self) -> np.ndarray:
        """A click's true expected watch fraction of every test impression, aligned like `test_click_prob`."""
        return self._split_arrays("watch_mean_files", "test")

    def test_clicked(self) -> np.ndarray:
        """The observed clicks (0/1) of the test impressions, aligned like `test_click_prob`
        (a copy of the `clicked` column, kept here so oracle metrics need no file reader)."""
        if self._test_day is not None:
            return self.day_clicked(self._test_day)
        return self._split_arrays("clicked_files", "test")

    def test_click_prob(self) -> np.ndarray:
        """True click probability of every test impression, aligned row by row
        with reading the `test/` shards in sorted (file name) order (or day
        `d`'s tables, from `with_test_day(d)`)."""
        if self._test_day is not None:
            return self.day_click_prob(self._test_day)
        return self._split_prob("test")

    def with_test_day(self, day: int) -> "GroundTruth":
        """This ground truth with day `day`'s impressions of a daily dataset as its test split.

        The day a daily job is scored on (`DataConfig.days`): `test_click_prob` and
        `test_clicked` then follow `day_files(root, day)`, so the report's oracle
        figures are the day's.
        """
        view = copy.copy(self)
        view._test_day = int(day)
        return view

    def train_click_prob(self) -> np.ndarray:
        """Same as `test_click_prob`, for the `train/` shards."""
        return self._split_prob("train")

    def validation_clicked(self) -> np.ndarray:
        """Same as `test_clicked`, for the `validation/` shards (empty when the
        dataset has no validation split)."""
        return self._split_arrays("clicked_files", "validation")

    def validation_click_prob(self) -> np.ndarray:
        """Same as `test_click_prob`, for the `validation/` shards (empty when the
        dataset has no validation split)."""
        return self._split_prob("validation")

    def day_click_prob(self, day: int) -> np.ndarray:
        """True click probability of every impression of day `day` of a daily dataset, aligned row by
        row with reading its `days/<ddd>/` shards in sorted order (`day_files`)."""
        return self._day_arrays("click_prob_files", day)

    def day_clicked(self, day: int) -> np.ndarray:
        """The observed clicks (0/1) of day `day`'s impressions, aligned like `day_click_prob`."""
        return self._day_arrays("clicked_files", day)

    def _day_arrays(self, key: str, day: int) -> np.ndarray:
        if "days" not in self.params:
            raise ValueError(f"{self.root!r} is not a daily dataset (BuiltinConfig.days is 0).")
        files = self.params["days"][key]
        if not 0 <= day < len(files):  # -1 would silently be the last day's truth
            raise ValueError(f"{self.root!r}: day {day} is outside the window, days 0 to {len(files) - 1}.")
        parts = [np.load(os.path.join(self.root, f), allow_pickle=False) for f in files[day]]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64 if key == "clicked_files" else np.float32)

    def is_cold_start(self, video_ids: Sequence[str]) -> np.ndarray:
        """Bool array: whether each video was published inside the test period
        (so it is in no training impression)."""
        return self.cold_start[self.video_index(video_ids)]

    def published_before(self, t) -> np.ndarray:
        """Mask of catalog videos already published at time `t` (publish_time <= t).

        Args:
          t: a timestamp (returns [n_videos]) or an array of n timestamps
            (returns [n, n_videos]).
        """
        t = np.asarray(t, dtype=np.int64)
        if t.ndim == 0:
            return self.publish_time <= t
        return self.publish_time[None, :] <= t.reshape(-1)[:, None]


def oracle_auc(dataset_dir: str) -> float:
    """AUC of the true click probabilities against the observed clicks of the test split.

    This is the ceiling a ranking model's test AUC can reach (up to sampling noise).

    Args:
      dataset_dir: a generated built-in dataset.

    Returns:
      The AUC (float).

    Example:

    >>> oracle_auc(ensure_builtin(config=BuiltinConfig.tiny()))   # doctest: +SKIP
    0.77
    """
    gt = GroundTruth.load(dataset_dir)
    return auc(gt.test_clicked(), gt.test_click_prob())
