"""`BuiltinConfig` (sizes, seed and every noise level) and the generator's fixed constants.

The constants here are not config on purpose: the seed-derivation tags
(`_PART_*`, used by `_rng`) and the generation block sizes must never change
what is drawn, and `DATASET_VERSION` names the generator's output in cache keys.
"""

import dataclasses
import hashlib
import json
import math
from typing import Dict, Tuple

import numpy as np

from tfrec_video.datasets.builtin.topics import TOPICS, Topic
from tfrec_video.config_fields import check_known
from tfrec_video.errors import ConfigError, shorten

# Bump whenever the generator's output for a given config changes: caches keyed
# on the config hash are then regenerated.
DATASET_VERSION = "builtin-3"   # 2: the validation split; 3: watch time

FORMATS = {"parquet": "parquet", "tfrecord": "tfrecord", "csv": "csv"}

# Seed-derivation tags: every part of the generator draws from its own stream
# `default_rng([seed, PART, block])`, so chunking and shard sizes never change
# what is drawn.
_PART_TOPICS, _PART_VIDEOS, _PART_USERS, _PART_PROJECTION = 1, 2, 3, 4
_PART_EMBEDDINGS, _PART_TITLES, _PART_IMPRESSIONS, _PART_MEDIA = 5, 6, 7, 8
_PART_LANGUAGE = 9   # `language_shift` only: its own stream, so the shift changes nothing but titles
_PART_DAYS = 10      # `days` only: publish times, user arrivals and topic drift of the daily service
_PART_WATCH = 11     # watch time: the videos' quality and each click's watch fraction (every other draw unchanged)

# Generation block sizes: constants (not config) so results never depend on them.
_USER_BLOCK = 1024
_VIDEO_BLOCK = 4096

_DAY = 86400
# `language_shift=True` means this share of a topic's training-period titles in its training language.
DEFAULT_LANGUAGE_SHIFT = 0.9

# Older videos were published up to this long before the window starts.
_BACKLOG_SECONDS = 180 * _DAY

_DAILY_FIELDS = ("days", "freshness_half_life_days", "topic_drift", "new_user_fraction")   # the daily service


def _rng(seed: int, part: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(part), int(block)])


@dataclasses.dataclass
class BuiltinConfig:
    """Configuration of the built-in dataset.

    The defaults make a quickstart dataset (3000 videos, 4000 users, about
    215k impressions, 12% CTR) that generates in about 4 seconds and that a
    model trains on in a few minutes on 2 CPU cores.
    The noise levels below ARE the benchmark: they were chosen so that every
    content feature is useful but none is perfect, and so that the oracle AUC
    is well below 1. Do not lower them to make a model look good.

    Args:
      seed: random seed; the same config gives byte-identical files.
      n_videos: catalog size.
      n_users: number of users.
      n_topics: number of latent topics (2 to `len(TOPICS)` = 20).
      impressions_per_user: mean impressions per user before the removal of
        repeated (user, video) pairs (an average user loses a few percent).
      media_embeddings: write `image_embedding` and `audio_embedding` catalog
        columns. False gives a titles-only catalog (title, category,
        duration), like most public interaction datasets.
      image_dim: length of `image_embedding` (1024, like MobileNet features).
      audio_dim: length of `audio_embedding` (128, like VGGish).
      history_length: at most this many previous clicks in `history`.
      cold_start_fraction: fraction of videos published inside the test period
        (never in training impressions); shows whether content features help.
      test_fraction: the last fraction of the time window that is the test split.
      validation_fraction: the fraction of the time window just before the test
        period that is the validation split (for choosing epochs and early
        stopping): the latest training-period impressions, held out the way a
        real user would, never test-period ones. Default 0.1, so with the
        default `test_fraction` the window is 70% train, 10% validation and
        20% test. 0 means no validation split (no `validation/` folder).
        `validation_fraction + test_fraction` must be below 1.
      window_days: length of the impression time window, in days.
      start_timestamp: start of the window (seconds since the epoch; default
        2024-01-01 00:00 UTC).
      n_media_videos: videos that get a real thumbnail and WAV clip.
      catalog_rows_per_shard: rows per catalog file.
      impressions_rows_per_shard: rows per train/test file (validation files hold
        `validation_fraction` of that, so the splits have about as many files).
      video_topic_concentration: Dirichlet concentration of video topic
        mixtures (per topic, relative to a uniform share). 0.05 gives 1-2
        dominant topics (the dominant one holds 70% of the mass on average);
        larger values blur topics together.
      user_topic_concentration: same for user preferences; 0.2 gives 1-3 liked
        topics.
      title_noise_word_fraction: probability that a title word is a noise word
        (a filler word or any topic's word) instead of a word of the video's
        topics. 0.3: titles are informative, but a third of the words mislead or
        carry nothing. Measured: a bag-of-words probe finds the dominant topic
        of about 68% of cold videos from the title alone.
      image_noise_std: standard deviation of the isotropic Gaussian noise added
        to the unit-variance topic signal of `image_embedding`; the
        per-dimension signal-to-noise ratio is `1 / image_noise_std**2`. The
        signal lives in an `n_topics`-dimensional subspace, so what matters
        is the SNR after projecting onto it:
        `image_dim / (n_topics * image_noise_std**2)`. Default 6.0: per-dimension
        SNR 0.03, topic-space SNR 1.8. Measured: a ridge probe trained on the
        warm catalog's embeddings (with topic labels, which a recommender
        never gets) finds the dominant topic of 76-83% of cold videos,
        against 99% for noise-free embeddings.
      audio_noise_std: the same for `audio_embedding`. Default 3.0: with 128
        dimensions that is a topic-space SNR of 0.9 (noisier than images);
        the same probe scores 68-76%.
      category_noise: probability that a video's category is a random category
        instead of its dominant topic's.
      language_mix: probabilities of English, Chinese and mixed-language titles.
      duration_sigma: log-scale standard deviation of durations around the
        dominant topic's typical duration.
      popularity_sigma: log-scale standard deviation of popularity
        (`pop = exp(popularity_sigma * z)`); larger is more heavy-tailed.
      popularity_exponent: exposure weight is `pop ** popularity_exponent`; 0
        shows videos uniformly, 1 in proportion to popularity.
      exposure_popularity_fraction: the exposure mix: the fraction of
        impressions drawn from global popularity; the rest are drawn from the
        user's topics (the platform's previous recommender was half-decent).
      click_scale: weight of the topic affinity `cos(theta_u, theta_v)` (in
        [0, 1]) in the click logit.
      click_bias: intercept of the click logit.
      popularity_click_weight: weight of the standardised log-popularity in the
        click logit (small: popularity mostly drives exposure, not clicks).
      user_bias_std: standard deviation of per-user click propensity offsets.
      context_effect: strength of the context term (device x duration, hour).
      watch_bias: intercept of the watch logit: a clicked impression's true
        expected watch fraction is `sigmoid(watch_bias + watch_affinity_scale *
        cos(theta_u, theta_v) + watch_quality_scale * quality_v -
        watch_duration_scale * zdur_v)`, with `quality_v ~ N(0, 1)` a per-video
        latent independent of popularity and of the click logit (what makes a
        video worth finishing, not worth clicking).
      watch_affinity_scale: weight of the topic affinity in the watch logit.
      watch_quality_scale: weight of the video's quality in the watch logit.
      watch_duration_scale: how much longer videos are watched less (a fraction).
      watch_concentration: the observed `watch_fraction` of a click is drawn from
        `Beta(mean * c, (1 - mean) * c)` around the true mean: larger is less noisy.
      activity_sigma: log-scale standard deviation of user activity (how many
        impressions a user gets, relative to the mean).
      device_loyalty: fraction of a user's impressions on their preferred device.
      media_pixel_noise_std: per-pixel Gaussian noise of the raw thumbnails
        (0-255 scale), on top of per-video brightness and stripe-phase jitter.
      media_audio_noise_std: white noise of the raw WAV clips, relative to a
        unit-amplitude tone (before peak normalisation).
      language_shift: a title-language shift between the training and the
        test period, for measuring what a multilingual title encoder buys on
        cold videos. 0 (the default) is off: titles are English, Chinese or
        mixed by `language_mix`. A number `p` in [0.5, 1] replaces
        `language_mix`: half the topics (a seeded choice) have English as
        their *training language*, the other half Chinese; of the videos of a
        topic (their dominant topic) published before the test period, a
        random `round(p * n)` get titles in the training language and the
        rest in the other language; of its cold-start videos, published in
        the test period, the other way round (a share `p` in the other
        language). An exact share, not a coin per video, so that a topic
        with few videos is shifted as much as a large one. No title is mixed. True
        means 0.9 and False 0. Only the titles change: every other column,
        the impressions and the clicks are those of the config without the
        shift (the languages are drawn from a stream of their own). The
        topic words are real English and Chinese words, so a CNN that
        learns a topic's words from its training titles has never seen the
        words of its cold videos, while a multilingual pretrained encoder
        (`ModelConfig.title_encoder`) maps both to the same place.
        `truth/truth.json` then records each topic's training language.
      days: the daily service, for benchmarking daily retraining ("Daily
        service" in `tfrec_video.datasets.builtin`). 0 (the default) is off.
        `N` in [1, window_days): videos are published and users arrive every
        day, exposure drifts from day to day, and the impressions are also
        written one table a day (`days/<ddd>/`, with a `day` column: the day
        of the window, from 0); the last `N` days are the benchmark days.
        `cold_start_fraction` is then unused.
      freshness_half_life_days: (days > 0) half-life, in days, of the decay of
        a video's exposure weight with its age: `pop ** popularity_exponent *
        (0.1 + 0.9 * 0.5 ** (age_days / h))` on a day.
      topic_drift: (days > 0) per-day standard deviation of the random walk of
        each topic's log exposure multiplier (0.2: 0.6-1.7x after a week).
      new_user_fraction: (days > 0) share of users who arrive during the
        window, on a uniform day 1..window_days-1 (the others on day 0).

    Example:

    >>> cfg = BuiltinConfig(n_videos=500, n_users=400, seed=7)
    >>> BuiltinConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    seed: int = 0
    n_videos: int = 3000
    n_users: int = 4000
    n_topics: int = 16
    impressions_per_user: float = 60.0
    media_embeddings: bool = True
    image_dim: int = 1024
    audio_dim: int = 128
    history_length: int = 20
    cold_start_fraction: float = 0.1
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    window_days: int = 56
    start_timestamp: int = 1704067200
    n_media_videos: int = 40
    catalog_rows_per_shard: int = 20000
    impressions_rows_per_shard: int = 100000
    # Noise levels and the click model: the difficulty of the benchmark.
    video_topic_concentration: float = 0.05
    user_topic_concentration: float = 0.2
    title_noise_word_fraction: float = 0.3
    image_noise_std: float = 6.0
    audio_noise_std: float = 3.0
    category_noise: float = 0.1
    language_mix: Tuple[float, float, float] = (0.5, 0.3, 0.2)
    duration_sigma: float = 0.7
    popularity_sigma: float = 1.2
    popularity_exponent: float = 1.0
    exposure_popularity_fraction: float = 0.5
    click_scale: float = 4.0
    click_bias: float = -4.5
    popularity_click_weight: float = 0.3
    user_bias_std: float = 0.5
    context_effect: float = 0.5
    watch_bias: float = 0.0
    watch_affinity_scale: float = 2.0
    watch_quality_scale: float = 1.0
    watch_duration_scale: float = 0.5
    watch_concentration: float = 8.0
    activity_sigma: float = 0.6
    device_loyalty: float = 0.7
    media_pixel_noise_std: float = 18.0
    media_audio_noise_std: float = 0.15
    language_shift: float = 0.0
    days: int = 0   # the daily service (off while days is 0)
    freshness_half_life_days: float = 1.0
    topic_drift: float = 0.2
    new_user_fraction: float = 0.5

    def __post_init__(self):
        if isinstance(self.language_mix, list):
            self.language_mix = tuple(self.language_mix)
        if isinstance(self.language_shift, (bool, np.bool_)):
            self.language_shift = DEFAULT_LANGUAGE_SHIFT if self.language_shift else 0.0
        self.validate()

    @classmethod
    def tiny(cls, **overrides) -> "BuiltinConfig":
        """A small config for tests: 150 videos, 120 users, about 2100 impressions
        (3000 drawn, minus repeats in a small catalog), several shards per
        split; generates in about 0.3 seconds.

        Args:
          **overrides: fields to change (for example `seed=1`).
        """
        fields = dict(n_videos=150, n_users=120, impressions_per_user=25.0, n_media_videos=8,
                      catalog_rows_per_shard=100, impressions_rows_per_shard=1000)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def sparse(cls, **overrides) -> "BuiltinConfig":
        """The sparse regime: what public micro-video interaction data looks like.

        24,000 users with a median of about 6 clicks each (and a long tail of
        heavy users), 10,000 videos with a heavy-tailed popularity, 30% of them
        published in the test period (cold), titles only (no image or audio
        embeddings, no media files), and about as many clicks as non-clicks
        (public datasets keep the positives and sample negatives 1:1). About
        300k impressions, so it trains in minutes like the default.

        Defaults that only hold on dense users with media (the default config)
        are caught here: the user-id embedding has a handful of events to learn
        from, most of the catalog is rarely seen, and the title is the only
        content. Evaluate it leave-one-out (`evaluate(..., protocol=
        "leave_one_out")`), the protocol such datasets are reported with.

        Args:
          **overrides: fields to change (for example `n_users=5000`).
        """
        fields = dict(n_users=24000, n_videos=10000, impressions_per_user=16.0, activity_sigma=0.8,
                      popularity_sigma=1.8, cold_start_fraction=0.3, click_bias=-2.0,
                      media_embeddings=False, n_media_videos=0)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def daily(cls, **overrides) -> "BuiltinConfig":
        """The daily-retraining benchmark: a 12-day service, the last 6 days the benchmark days; 3000 videos,
        3000 users, about 85k impressions. The splits line up with the days: train is days 0-4, validation
        day 5, test days 6-11. `**overrides`: fields to change (for example `days=4`)."""
        fields = dict(days=6, window_days=12, test_fraction=0.5, validation_fraction=1 / 12, n_videos=3000,
                      n_users=3000, impressions_per_user=40.0, n_media_videos=0)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def named(cls, name: str, **overrides) -> "BuiltinConfig":
        """A named config (`data.builtin` in a run config), with some fields changed.

        Args:
          name: `"tiny"`, `"default"`, `"sparse"` or `"daily"`.
          **overrides: fields to change (for example `language_shift=0.9`);
            an unknown name is a `ConfigError` naming it and the closest field.

        Returns:
          The `BuiltinConfig`.
        """
        makers = {"tiny": cls.tiny, "default": cls, "sparse": cls.sparse, "daily": cls.daily}
        if not isinstance(name, str) or name not in makers:
            raise ConfigError(f"the built-in dataset is one of {sorted(makers)}, got {shorten(name)}.")
        check_known(overrides, [f.name for f in dataclasses.fields(cls)], "BuiltinConfig")
        return makers[name](**overrides)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field.

        `language_shift` is left out while it is off (0), and `days` with the
        other fields of the daily service while `days` is 0 (`validate` keeps
        those at their defaults then), so that the configs from before they
        existed keep their dict, their `config_hash` and their cached datasets.
        """
        d = dataclasses.asdict(self)
        d["language_mix"] = list(self.language_mix)
        if not self.language_shift:
            del d["language_shift"]
        for name in _DAILY_FIELDS if not self.days else ():
            del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuiltinConfig":
        """Inverse of `to_dict`; unknown keys raise `ConfigError` naming them (and the closest field)."""
        if not isinstance(d, dict):
            raise ConfigError(f"BuiltinConfig: expected a mapping of field names to values, got {shorten(d)}.")
        check_known(d, [f.name for f in dataclasses.fields(cls)], "BuiltinConfig")
        return cls(**d)

    def config_hash(self) -> str:
        """A short hash of the config and the generator version (names cache dirs)."""
        payload = json.dumps({"config": self.to_dict(), "version": DATASET_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    def validate(self) -> None:
        """Raises `ConfigError` (a `ValueError`) naming the first bad field."""

        def fail(name, expected):
            raise ConfigError(f"BuiltinConfig.{name} must be {expected}, got {shorten(getattr(self, name))}.")

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        def is_num(x):
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
                and math.isfinite(float(x))

        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "a non-negative integer")
        if not isinstance(self.media_embeddings, (bool, np.bool_)):
            fail("media_embeddings", "True or False")
        for name in ("n_videos", "n_users", "image_dim", "audio_dim", "history_length", "window_days",
                     "catalog_rows_per_shard", "impressions_rows_per_shard"):
            if not is_int(getattr(self, name)) or getattr(self, name) <= 0:
                fail(name, "a positive integer")
        if self.n_videos < 2:
            fail("n_videos", "at least 2")
        if not is_int(self.n_topics) or not 2 <= self.n_topics <= len(TOPICS):
            fail("n_topics", f"an integer from 2 to {len(TOPICS)}")
        if not is_num(self.impressions_per_user) or self.impressions_per_user <= 0:
            fail("impressions_per_user", "a positive number")
        if not is_int(self.start_timestamp) or self.start_timestamp < _BACKLOG_SECONDS:
            fail("start_timestamp", f"an integer timestamp of at least {_BACKLOG_SECONDS}")
        if not is_int(self.n_media_videos) or not 0 <= self.n_media_videos <= self.n_videos:
            fail("n_media_videos", f"an integer from 0 to n_videos ({self.n_videos})")
        for name in ("cold_start_fraction",):
            v = getattr(self, name)
            if not is_num(v) or not 0 <= v < 1:
                fail(name, "a number in [0, 1)")
        if round(self.cold_start_fraction * self.n_videos) > self.n_videos - 1:
            fail("cold_start_fraction", "small enough to leave at least one non-cold-start video")
        if not is_num(self.test_fraction) or not 0 < self.test_fraction < 1:
            fail("test_fraction", "a number in (0, 1)")
        if not is_num(self.validation_fraction) or not 0 <= self.validation_fraction < 1:
            fail("validation_fraction", "a number in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            fail("validation_fraction", f"less than 1 - test_fraction ({1 - self.test_fraction:g}), so that "
                 "some of the window is left for the train split")
        for name in ("title_noise_word_fraction", "category_noise", "exposure_popularity_fraction",
                     "device_loyalty"):
            v = getattr(self, name)
            if not is_num(v) or not 0 <= v <= 1:
                fail(name, "a number in [0, 1]")
        for name in ("video_topic_concentration", "user_topic_concentration"):
            v = getattr(self, name)
            if not is_num(v) or v <= 0:
                fail(name, "a positive number")
        for name in ("image_noise_std", "audio_noise_std", "duration_sigma", "popularity_sigma",
                     "popularity_exponent", "click_scale", "popularity_click_weight", "user_bias_std",
                     "context_effect", "activity_sigma", "media_pixel_noise_std", "media_audio_noise_std",
                     "watch_affinity_scale", "watch_quality_scale", "watch_duration_scale"):
            v = getattr(self, name)
            if not is_num(v) or v < 0:
                fail(name, "a non-negative number")
        for name in ("click_bias", "watch_bias"):
            if not is_num(getattr(self, name)):
                fail(name, "a finite number")
        if not is_num(self.watch_concentration) or self.watch_concentration <= 0:
            fail("watch_concentration", "a positive number")
        mix = self.language_mix
        if (not isinstance(mix, tuple) or len(mix) != 3 or not all(is_num(x) and x >= 0 for x in mix)
                or abs(sum(mix) - 1.0) > 1e-6):
            fail("language_mix", "three non-negative probabilities (English, Chinese, mixed) summing to 1")
        shift = self.language_shift
        if not is_num(shift) or not (shift == 0 or 0.5 <= shift <= 1):
            fail("language_shift", "0 or False (off), True (0.9), or a number in [0.5, 1]: the share of a topic's "
                 "training-period titles in its training language")
        if not is_int(self.days) or not 0 <= self.days < self.window_days:
            fail("days", f"0 (off) or a number of benchmark days below window_days ({self.window_days})")
        for name, low, high, expected in (("freshness_half_life_days", 1e-9, math.inf, "a positive number"),
                                          ("topic_drift", 0, math.inf, "a non-negative number"),
                                          ("new_user_fraction", 0, 1, "a number in [0, 1]")):
            if not is_num(getattr(self, name)) or not low <= getattr(self, name) <= high:
                fail(name, expected)
            if not self.days and getattr(self, name) != (default := type(self).__dataclass_fields__[name].default):
                fail(name, f"its default ({default}) while days is 0: it only acts on the daily service")

    # Derived quantities -------------------------------------------------------

    @property
    def benchmark_days(self) -> Tuple[int, ...]:
        """The last `days` days of the window (days from 0); `()` while `days` is 0."""
        return tuple(range(self.window_days - self.days, self.window_days)) if self.days else ()

    @property
    def end_timestamp(self) -> int:
        return self.start_timestamp + self.window_days * _DAY

    @property
    def split_timestamp(self) -> int:
        """First second of the test period."""
        return self.start_timestamp + int(round((1.0 - self.test_fraction) * self.window_days * _DAY))

    @property
    def validation_timestamp(self) -> int:
        """First second of the validation period (the train period ends just before it);
        `split_timestamp` when `validation_fraction` is 0."""
        return self.split_timestamp - int(round(self.validation_fraction * self.window_days * _DAY))

    @property
    def topics(self) -> Tuple[Topic, ...]:
        return TOPICS[: self.n_topics]

    @property
    def categories(self) -> Tuple[str, ...]:
        seen = []
        for t in self.topics:
            if t.category not in seen:
                seen.append(t.category)
        return tuple(seen)

    def click_params(self) -> Dict[str, float]:
        return {"click_bias": float(self.click_bias), "click_scale": float(self.click_scale),
                "popularity_click_weight": float(self.popularity_click_weight),
                "context_effect": float(self.context_effect)}

    def watch_params(self) -> Dict[str, float]:
        return {name: float(getattr(self, name)) for name in (
            "watch_bias", "watch_affinity_scale", "watch_quality_scale", "watch_duration_scale")}
