"""The latent variables of the built-in dataset: `_Latents`.

Topic mixtures, popularity, publish times, languages, durations and categories
of videos; topic preferences, click propensities, activity, devices and peak
hours of users; and the exposure indices that draw the video of an impression.
With `days` (the daily service) also the daily schedule: publish times spread
over the window, users' first-active days, the topics' drifting exposure
multipliers and the per-day exposure weights (`_daily_schedule`,
`_daily_weights`).
"""

from typing import Tuple

import numpy as np

from tfrec_video.datasets.builtin import truth as truth_lib
from tfrec_video.datasets.builtin.config import (
    _BACKLOG_SECONDS,
    _DAY,
    _PART_DAYS,
    _PART_LANGUAGE,
    _PART_TOPICS,
    _PART_USERS,
    _PART_VIDEOS,
    _PART_WATCH,
    BuiltinConfig,
    _rng,
)
from tfrec_video.datasets.builtin.topics import _DEVICE_PROBS, DEVICES

# The daily service: the share of videos published before the window (the rest are published
# uniformly over it, so every day has new ones), and the share of its exposure weight a video keeps
# once it is old (the floor of the freshness decay: evergreen videos are still shown, much less).
_DAILY_BACKLOG_SHARE = 0.25
_DAILY_EVERGREEN = 0.1


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(5, len(str(n - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    # Gamma draws instead of rng.dirichlet: explicit, and small alphas stay exact
    # (a row of all-zero draws, astronomically rare, becomes its largest-alpha topic).
    g = rng.standard_gamma(np.broadcast_to(alpha, (n, alpha.size)))
    s = g.sum(axis=1, keepdims=True)
    empty = s[:, 0] <= 0
    if np.any(empty):
        g[empty, int(np.argmax(alpha))] = 1.0
        s = g.sum(axis=1, keepdims=True)
    return g / s


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _shifted_languages(cfg: BuiltinConfig, dominant: np.ndarray, is_cold: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Title languages under `cfg.language_shift` (`BuiltinConfig`), from their own seeded stream.

    Args:
      cfg: the config (`language_shift` > 0).
      dominant: [n_videos] each video's dominant topic.
      is_cold: [n_videos] True for videos published in the test period.

    Returns:
      (topic_language [n_topics], language [n_videos]): 0 English, 1 Chinese
      (`LANGUAGES` indices); each topic's training language, and each video's
      title language.
    """
    rng = _rng(cfg.seed, _PART_LANGUAGE)
    K = cfg.n_topics
    # Half the topics each way, so that neither language is the rare one and each
    # language's words are learned for some topics and cold for others.
    topic_language = np.zeros(K, dtype=np.int8)
    topic_language[rng.permutation(K)[: K // 2]] = 1
    # In each group of videos (one topic, training period or cold), a random
    # round(share * size) of them get the group's main language: a topic's share is
    # then the configured one, not a binomial draw around it, however few its videos.
    group = 2 * dominant.astype(np.int64) + is_cold
    order = np.lexsort((rng.random(dominant.size), group))
    sizes = np.bincount(group, minlength=2 * K)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(dominant.size, dtype=np.int64)
    rank[order] = np.arange(dominant.size) - starts[group[order]]
    in_main_language = rank < np.round(cfg.language_shift * sizes[group])
    # Training-period videos: the main language is the topic's training language; cold
    # videos are flipped: mostly the language their topic was never trained in.
    same = in_main_language != is_cold
    language = np.where(same, topic_language[dominant], 1 - topic_language[dominant]).astype(np.int8)
    return topic_language, language


def _daily_schedule(cfg: BuiltinConfig, n_topics: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The time-varying part of the daily service (`days` > 0), from its own seeded stream.

    Args:
      cfg: the config.
      n_topics: K.

    Returns:
      (publish_time [n_videos], first_day [n_users], topic_multiplier
      [window_days, K]): a `_DAILY_BACKLOG_SHARE` of the videos (video 0
      among them, so one exists when the window opens) published in the 180
      days before the window, the others at uniform times inside it; each
      user's first-active day (0, or for a `new_user_fraction` of them a
      uniform day 1..window_days-1); each topic's exposure multiplier on each
      day, `exp(topic_drift * random walk)`, 1 on day 0.
    """
    V, U, W = cfg.n_videos, cfg.n_users, cfg.window_days
    rng = _rng(cfg.seed, _PART_DAYS, 0)
    backlog = rng.random(V) < _DAILY_BACKLOG_SHARE
    backlog[0] = True
    start, end = cfg.start_timestamp, cfg.end_timestamp
    pub = np.where(backlog, rng.integers(start - _BACKLOG_SECONDS, start, V), rng.integers(start, end, V))
    rng = _rng(cfg.seed, _PART_DAYS, 1)
    new = rng.random(U) < cfg.new_user_fraction
    first_day = np.where(new, rng.integers(1, W, U), 0).astype(np.int64)
    rng = _rng(cfg.seed, _PART_DAYS, 2)
    walk = np.concatenate([np.zeros((1, n_topics)), np.cumsum(rng.standard_normal((W - 1, n_topics)), axis=0)])
    return pub.astype(np.int64), first_day, np.exp(cfg.topic_drift * walk)


def _daily_weights(cfg: BuiltinConfig, exposure_weight: np.ndarray, publish_time: np.ndarray,
                   dominant: np.ndarray, topic_multiplier: np.ndarray) -> np.ndarray:
    """[window_days, n_videos] exposure weight of every video on every day of the daily service.

    `pop ** popularity_exponent * freshness * topic_multiplier[day, dominant topic]`, where freshness
    `= 0.1 + 0.9 * 0.5 ** (age / freshness_half_life_days)` and `age` is the video's age in days at
    the start of the day (0 for a video published that day; a video not yet published has weight too,
    but the samplers only draw among those published by the impression's time).
    """
    day_start = cfg.start_timestamp + _DAY * np.arange(cfg.window_days, dtype=np.int64)
    age = np.maximum(day_start[:, None] - publish_time[None, :], 0) / _DAY
    fresh = _DAILY_EVERGREEN + (1.0 - _DAILY_EVERGREEN) * 0.5 ** (age / cfg.freshness_half_life_days)
    return exposure_weight[None, :] * fresh * topic_multiplier[:, dominant]


class _Latents:
    """Every per-video and per-user latent variable (O(n_videos + n_users) memory; with days also the
    exposure weights of every day, O(window_days * n_videos))."""

    def __init__(self, cfg: BuiltinConfig):
        self.cfg = cfg
        K = cfg.n_topics
        V, U = cfg.n_videos, cfg.n_users

        rng = _rng(cfg.seed, _PART_TOPICS)
        share = np.arange(1, K + 1, dtype=np.float64) ** -0.6
        self.topic_share = rng.permutation(share / share.sum())

        # Videos.
        rng = _rng(cfg.seed, _PART_VIDEOS)
        theta = _dirichlet(rng, cfg.video_topic_concentration * K * self.topic_share, V)
        self.video_theta = theta.astype(np.float32)
        self.video_unit = _unit_rows(self.video_theta.astype(np.float64))
        self.dominant = np.argmax(self.video_theta, axis=1).astype(np.int64)
        self.zpop = rng.standard_normal(V).astype(np.float32)
        self.popularity = np.exp(cfg.popularity_sigma * self.zpop.astype(np.float64)).astype(np.float32)
        self.exposure_weight = np.exp(cfg.popularity_exponent * cfg.popularity_sigma * self.zpop.astype(np.float64))

        n_cold = int(round(cfg.cold_start_fraction * V))
        self.is_cold = np.zeros(V, dtype=bool)
        self.is_cold[rng.choice(V, size=n_cold, replace=False)] = True
        start, split, end = cfg.start_timestamp, cfg.split_timestamp, cfg.end_timestamp
        warm = np.flatnonzero(~self.is_cold)
        backlog = rng.random(warm.size) < 0.5
        backlog[0] = True   # at least one video exists when the window opens
        pub = np.empty(V, dtype=np.int64)
        pub[warm] = np.where(
            backlog,
            rng.integers(start - _BACKLOG_SECONDS, start, warm.size),
            rng.integers(start, split, warm.size),
        )
        cold = np.flatnonzero(self.is_cold)
        pub[cold] = rng.integers(split, split + max(1, (end - split) // 2), cold.size)
        self.publish_time = pub
        # The daily service replaces the publish times (its own stream: every other latent is the
        # same as without it); its cold videos are those published in the test period.
        self.first_day = self.topic_multiplier = None
        if cfg.days:
            self.publish_time, self.first_day, self.topic_multiplier = _daily_schedule(cfg, K)
            self.is_cold = self.publish_time >= split

        self.language = rng.choice(3, size=V, p=np.asarray(cfg.language_mix, np.float64)).astype(np.int8)
        # The draw above stays even with a shift: the stream then goes on as without one.
        self.topic_language = None
        if cfg.language_shift:
            self.topic_language, self.language = _shifted_languages(cfg, self.dominant, self.is_cold)
        medians = np.array([t.median_duration_s for t in cfg.topics], dtype=np.float64)
        dur = medians[self.dominant] * np.exp(cfg.duration_sigma * rng.standard_normal(V))
        self.duration = np.clip(np.round(dur, 1), 5.0, 4 * 3600.0).astype(np.float32)
        self.zdur = truth_lib.standardized_log_duration(self.duration).astype(np.float32)

        # Quality (what makes a video worth watching to the end): its own stream, so every other latent is the
        # same as before watch time existed.
        self.quality = _rng(cfg.seed, _PART_WATCH).standard_normal(V).astype(np.float32)

        categories = cfg.categories
        cat_of_topic = np.array([categories.index(t.category) for t in cfg.topics], dtype=np.int64)
        noisy = rng.random(V) < cfg.category_noise
        self.category = np.where(noisy, rng.integers(0, len(categories), V), cat_of_topic[self.dominant])

        # Users.
        rng = _rng(cfg.seed, _PART_USERS)
        self.user_theta = _dirichlet(rng, cfg.user_topic_concentration * K * self.topic_share, U).astype(np.float32)
        self.user_unit = _unit_rows(self.user_theta.astype(np.float64))
        self.user_bias = (cfg.user_bias_std * rng.standard_normal(U)).astype(np.float32)
        s = cfg.activity_sigma
        self.activity = np.exp(s * rng.standard_normal(U) - s * s / 2.0)
        self.pref_device = rng.choice(len(DEVICES), size=U, p=np.asarray(_DEVICE_PROBS)).astype(np.int64)
        # Peak hours: most people watch in the evening, some at lunch, a few any time.
        kind = rng.choice(3, size=U, p=[0.6, 0.25, 0.15])
        peak = np.where(kind == 0, rng.normal(20.5, 1.5, U),
                        np.where(kind == 1, rng.normal(12.5, 1.5, U), rng.uniform(0, 24, U)))
        self.peak_hour = np.mod(np.round(peak), 24).astype(np.int64)

        self.video_ids = _ids("v", V)
        self.user_ids = _ids("u", U)
        self._build_exposure_index()

    def _build_exposure_index(self):
        # Popularity exposure: videos in publish order, with the cumulative
        # exposure weight, so "sample among videos published by t" is a prefix
        # of this order: searchsorted for the prefix, then for the draw.
        # With days, the weights change every day: the cumulative weights of
        # all days are one flat array, day d's run at offset d * n_videos
        # (`_offset`), so one searchsorted still draws rows of different days.
        if self.cfg.days:
            weights = _daily_weights(self.cfg, self.exposure_weight, self.publish_time, self.dominant,
                                     self.topic_multiplier)
        else:
            weights = self.exposure_weight[None, :]
        order = np.argsort(self.publish_time, kind="stable")
        self.pop_order = order
        self.pop_pub = self.publish_time[order]
        self.pop_cum = np.cumsum(weights[:, order])
        # Topic exposure: videos sorted by (dominant topic, publish time); a
        # topic's videos published by t are a contiguous run of this order.
        order = np.lexsort((self.publish_time, self.dominant))
        self.top_order = order
        self.top_key = (self.dominant[order] << 40) + self.publish_time[order]
        self.top_cum = np.cumsum(weights[:, order])
        self.top_start = np.searchsorted(self.dominant[order], np.arange(self.cfg.n_topics), side="left")

    def day_of(self, t: np.ndarray) -> np.ndarray:
        """The day of the window (0-based) of timestamps `t`; the few seconds a tie bump pushes past the
        window's end stay on its last day."""
        return np.clip((np.asarray(t) - self.cfg.start_timestamp) // _DAY, 0, self.cfg.window_days - 1)

    def _offset(self, t: np.ndarray):
        # Where the day of `t` starts in the flat cumulative weights (0 without days: one run).
        return self.day_of(t) * self.cfg.n_videos if self.cfg.days else 0

    def sample_popular(self, t: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Videos drawn by exposure weight among those published at times `t` (r ~ U[0,1))."""
        k = np.searchsorted(self.pop_pub, t, side="right")     # >= 1: a backlog video exists
        off = self._offset(t)
        base = np.where(off > 0, self.pop_cum[np.maximum(off - 1, 0)], 0.0)
        j = np.searchsorted(self.pop_cum, base + r * (self.pop_cum[off + k - 1] - base), side="right") - off
        return self.pop_order[np.minimum(j, k - 1)]

    def sample_topic(self, z: np.ndarray, t: np.ndarray, r: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Videos of dominant topic `z` drawn by exposure weight among those published by `t`.

        Returns (videos, ok): `ok` is False where topic `z` had no published video yet.
        """
        k0 = self.top_start[z]
        k1 = np.searchsorted(self.top_key, (z << 40) + t, side="right")
        ok = k1 > k0
        off = self._offset(t)
        base = np.where(off + k0 > 0, self.top_cum[np.maximum(off + k0 - 1, 0)], 0.0)
        mass = np.where(ok, self.top_cum[np.maximum(off + k1 - 1, 0)] - base, 0.0)
        j = np.searchsorted(self.top_cum, base + r * mass, side="right") - off
        j = np.clip(j, k0, np.maximum(k1 - 1, k0))
        return self.top_order[np.minimum(j, self.cfg.n_videos - 1)], ok
