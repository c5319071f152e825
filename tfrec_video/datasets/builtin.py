"""The built-in dataset: a seeded video-recommendation benchmark with a planted truth.

`tfrec-video` uses this dataset when it is given no data. Everything is drawn
from a known generative story, so besides training data it yields the *truth*:
the exact click probability of every impression, from which the oracle AUC and
oracle Recall@K (the best any model can do) are computed
(`tfrec_video.datasets.truth`).

Generative story
----------------

1. **Topics.** There are `n_topics` topics (cooking, football, cats, travel,
   gaming, music, news, fitness, ...; see `TOPICS`), each with an English and a
   Chinese vocabulary, a category, a typical duration, a thumbnail colour and a
   tone frequency. Topics are not equally common: topic shares follow a mild
   power law.
2. **Videos.** Video `v` has a topic mixture
   `theta_v ~ Dirichlet(video_topic_concentration * n_topics * share)`, which
   puts most mass on 1-2 topics; its dominant topic is `argmax theta_v`. It has
   a popularity `pop_v = exp(popularity_sigma * zpop_v)`, `zpop_v ~ N(0, 1)`
   (log-normal, heavy-tailed), and a publish time: half of the non-cold videos
   are older than the impression window, the other half are published during
   the training period; a `cold_start_fraction` of videos are published inside
   the first half of the test period, so they are in no training impression.
3. **Titles.** 3-8 words. Each word is, with probability
   `title_noise_word_fraction`, a noise word (drawn uniformly from filler words
   such as "best"/"最新" and all topics' words, so it may point at a wrong
   topic); otherwise a word of a topic drawn from `theta_v` (frequent words of a
   topic are drawn more often). A title is English, Chinese or mixed with
   probabilities `language_mix`; Chinese words are joined without spaces.
4. **Category** is the dominant topic's category (several topics share one,
   e.g. cooking and baking are both "food"), replaced by a random category
   with probability `category_noise`.
   **Duration** is log-normal around the dominant topic's typical duration,
   with log-scale standard deviation `duration_sigma`.
5. **Embeddings.** `image_embedding = (W_img @ u_v + image_noise_std * eps) /
   sqrt(1 + image_noise_std**2)`, where `u_v = theta_v / |theta_v|`, `W_img` is a
   fixed [image_dim, n_topics] Gaussian matrix scaled so each signal dimension
   has unit variance, and `eps ~ N(0, I)`. The per-dimension signal-to-noise
   ratio is therefore `1 / image_noise_std**2`, and the division keeps values
   O(1). `audio_embedding` is the same with its own `W_aud` and `audio_noise_std`.
6. **Users.** User `u` has topic preferences
   `theta_u ~ Dirichlet(user_topic_concentration * n_topics * share)` (1-3
   liked topics), a click propensity `user_bias_u ~ N(0, user_bias_std)`, an
   activity level (log-normal, mean 1, log-sd `activity_sigma`), a preferred
   device (phone 55%, desktop 20%, tv 15%, tablet 10%) used for a
   `device_loyalty` share of their impressions, and a peak hour of day.
7. **Impressions.** User `u` gets `Poisson(impressions_per_user * activity_u)`
   impressions (at least one) at uniformly random days of the
   `window_days`-day window, at hours around their peak hour. The video shown
   is drawn, among the videos already published at that time, with probability
   `exposure_popularity_fraction` from the popularity distribution
   (`pop ** popularity_exponent`), and otherwise from the user's topics (a topic
   `z ~ theta_u`, then a video whose dominant topic is `z`, again weighted by
   `pop ** popularity_exponent`). A user is shown a video at most once (later
   repeats are dropped).
8. **Clicks.** `clicked ~ Bernoulli(sigmoid(logit))` with the logit of
   `tfrec_video.datasets.truth` (topic affinity `cos(theta_u, theta_v)` scaled
   by `click_scale`, `click_bias`, the user's bias, a small popularity term and
   a device x duration and hour-of-day context term).
9. **History** of an impression: the ids of the videos this user clicked
   strictly before it, newest first, at most `history_length`.
10. **Split by time.** Impressions in the last `test_fraction` of the window are
    the test split, the others the train split.
11. **Raw media.** `n_media_videos` videos get a real 64x64 PNG (every third a
    JPEG) thumbnail whose colour and stripes depend on the dominant topic, and a
    1 s 16 kHz WAV clip with tones at topic frequencies weighted by `theta_v`
    (`tfrec_video.datasets.media`).

Output layout (`generate`)::

    out_dir/
      dataset.json                 manifest; written last (its presence means "complete")
      catalog/part-00000.parquet   video_id, title, category, duration_s, image_embedding, audio_embedding
      train/part-00000.parquet     user_id, history, hour, device, video_id, clicked, timestamp
      test/part-00000.parquet
      media/media.csv              video_id,thumbnail_path,audio_path (paths relative to the CSV)
      media/thumbnails/<video_id>.png|.jpg
      media/audio/<video_id>.wav
      truth/                       planted truth, for evaluation only (never read by models)

Difficulty of the default config (measured; the noise levels are fields of
`BuiltinConfig` and documented there): CTR about 12%; oracle test AUC about
0.83; 90% of the cold-start videos are shown in the test period. With topic
labels (which no recommender gets), a linear probe trained on the warm catalog
finds the dominant topic of a cold video from its title about 68% of the
time, from its image embedding 76-83%, from its audio embedding 68-76%, and
from all three together 77-88% (99% from noise-free image embeddings).

Impression rows are grouped in blocks of users and shuffled inside each block,
so reading them needs only a modest shuffle buffer. Everything is seeded: the
same config gives byte-identical files, and the shard sizes change only how
rows are split between files, never the rows. Generation streams: impressions
are produced for 1024 users at a time and written shard by shard, so memory
stays bounded (measured: 1M videos and 10M impressions in under 4 minutes).
The per-video and per-user latent variables are held in memory.

Example:

>>> from tfrec_video.datasets import BuiltinConfig, generate, ensure_builtin
>>> manifest = generate("/tmp/builtin-tiny", BuiltinConfig.tiny(), progress=False)  # doctest: +SKIP
>>> manifest["counts"]["train_impressions"]                                      # doctest: +SKIP
1693
>>> path = ensure_builtin()   # the default config, cached    # doctest: +SKIP
"""

import argparse
import collections
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tfrec_video.datasets import media as media_lib
from tfrec_video.datasets import truth as truth_lib
from tfrec_video.errors import ConfigError
from tfrec_video.schema import catalog_schema, impressions_schema

# Bump whenever the generator's output for a given config changes: caches keyed
# on the config hash are then regenerated.
DATASET_VERSION = "builtin-1"

FORMATS = {"parquet": "parquet", "tfrecord": "tfrecord", "csv": "csv"}

# Topic: name, category, typical duration (s), English words, Chinese words.
# The first words of each list are the most frequent in titles.
Topic = collections.namedtuple("Topic", "name category median_duration_s en zh")

TOPICS: Tuple[Topic, ...] = (
    Topic("cooking", "food", 480,
          ("recipe", "kitchen", "pasta", "chicken", "soup", "noodles", "curry", "grill", "sauce", "dinner",
           "chef", "salad", "dumplings", "spicy"),
          ("烹饪", "食谱", "厨房", "红烧肉", "面条", "饺子", "炒饭", "家常菜", "美食", "火锅", "做法", "麻辣",
           "蒸鱼", "汤")),
    Topic("football", "sports", 300,
          ("football", "soccer", "goal", "penalty", "striker", "league", "match", "highlights", "champions",
           "derby", "goalkeeper", "transfer", "worldcup", "freekick"),
          ("足球", "进球", "点球", "联赛", "比赛", "集锦", "冠军", "射门", "门将", "转会", "世界杯", "球星",
           "欧冠", "任意球")),
    Topic("cats", "pets", 60,
          ("cat", "kitten", "meow", "purr", "whiskers", "catnip", "tabby", "paws", "nap", "scratch", "fluffy",
           "litterbox"),
          ("猫", "小猫", "喵", "猫咪", "橘猫", "猫粮", "撸猫", "胡须", "猫砂", "萌宠", "铲屎官", "布偶猫")),
    Topic("travel", "travel", 720,
          ("travel", "trip", "beach", "hotel", "flight", "backpacking", "island", "mountains", "itinerary",
           "passport", "roadtrip", "sunset", "resort"),
          ("旅行", "旅游", "海滩", "酒店", "机票", "自由行", "攻略", "风景", "古镇", "自驾", "打卡", "度假",
           "日落")),
    Topic("gaming", "gaming", 1500,
          ("gameplay", "walkthrough", "boss", "speedrun", "minecraft", "rpg", "level", "console", "esports",
           "multiplayer", "loot", "controller", "quest"),
          ("游戏", "通关", "实况", "电竞", "我的世界", "副本", "手游", "主机", "联机", "装备", "速通", "关卡",
           "任务")),
    Topic("music", "music", 240,
          ("song", "guitar", "piano", "concert", "cover", "lyrics", "album", "singer", "drums", "melody",
           "acoustic", "band", "chorus"),
          ("音乐", "歌曲", "吉他", "钢琴", "演唱会", "翻唱", "歌词", "专辑", "歌手", "乐队", "旋律", "现场",
           "合唱")),
    Topic("news", "news", 180,
          ("news", "election", "breaking", "president", "economy", "policy", "report", "interview",
           "government", "crisis", "summit", "headlines", "parliament"),
          ("新闻", "选举", "突发", "总统", "经济", "政策", "报道", "采访", "政府", "危机", "峰会", "头条",
           "议会")),
    Topic("fitness", "health", 900,
          ("workout", "gym", "abs", "squats", "cardio", "strength", "pushups", "hiit", "muscle", "dumbbell",
           "plank", "fatburn", "bodyweight"),
          ("健身", "锻炼", "腹肌", "深蹲", "有氧", "力量", "俯卧撑", "增肌", "哑铃", "平板支撑", "燃脂", "训练",
           "塑形")),
    Topic("tech", "technology", 600,
          ("smartphone", "unboxing", "review", "laptop", "camera", "battery", "chip", "gadget", "iphone",
           "android", "specs", "benchmark", "headphones"),
          ("手机", "开箱", "评测", "笔记本", "相机", "电池", "芯片", "数码", "苹果", "安卓", "参数", "跑分",
           "耳机")),
    Topic("cars", "autos", 540,
          ("car", "engine", "drift", "supercar", "electric", "testdrive", "horsepower", "tesla", "racing",
           "garage", "tires", "sedan", "turbo"),
          ("汽车", "发动机", "漂移", "超跑", "电动车", "试驾", "马力", "特斯拉", "赛车", "改装", "轮胎", "轿车",
           "涡轮")),
    Topic("comedy", "entertainment", 120,
          ("funny", "prank", "comedy", "sketch", "jokes", "laugh", "fails", "standup", "parody", "meme",
           "hilarious", "bloopers"),
          ("搞笑", "恶作剧", "喜剧", "小品", "笑话", "爆笑", "段子", "脱口秀", "模仿", "沙雕", "名场面", "相声")),
    Topic("baking", "food", 600,
          ("cake", "bread", "cookies", "dough", "oven", "chocolate", "croissant", "pastry", "cupcake",
           "frosting", "sourdough", "muffin", "pie"),
          ("烘焙", "蛋糕", "面包", "饼干", "烤箱", "巧克力", "奶油", "甜点", "曲奇", "面团", "月饼", "蛋挞",
           "布丁")),
    Topic("basketball", "sports", 240,
          ("basketball", "dunk", "nba", "playoffs", "threepointer", "rebound", "lakers", "court", "crossover",
           "buzzerbeater", "mvp", "assist"),
          ("篮球", "扣篮", "季后赛", "三分球", "篮板", "助攻", "绝杀", "球场", "湖人", "运球", "盖帽", "全明星")),
    Topic("dogs", "pets", 75,
          ("dog", "puppy", "fetch", "bark", "leash", "corgi", "retriever", "walkies", "treats", "husky",
           "doggo", "shiba"),
          ("狗", "小狗", "狗狗", "柯基", "哈士奇", "金毛", "遛狗", "汪汪", "狗粮", "柴犬", "宠物", "拆家")),
    Topic("movies", "entertainment", 150,
          ("movie", "trailer", "film", "actor", "scene", "director", "cinema", "plot", "oscars", "sequel",
           "marvel", "premiere"),
          ("电影", "预告片", "演员", "导演", "影院", "剧情", "奥斯卡", "续集", "漫威", "首映", "解说", "大片")),
    Topic("yoga", "health", 1200,
          ("yoga", "meditation", "breathing", "mindfulness", "pose", "calm", "relax", "flexibility", "sleep",
           "mat", "zen", "balance"),
          ("瑜伽", "冥想", "呼吸", "正念", "体式", "放松", "助眠", "柔韧", "平衡", "静心", "减压", "禅")),
    Topic("science", "education", 600,
          ("physics", "space", "experiment", "rocket", "planet", "chemistry", "universe", "quantum", "biology",
           "lab", "nasa", "telescope"),
          ("物理", "太空", "实验", "火箭", "行星", "化学", "宇宙", "量子", "生物", "实验室", "科普", "望远镜")),
    Topic("diy", "lifestyle", 540,
          ("diy", "craft", "woodworking", "paint", "origami", "knitting", "sewing", "handmade", "tools", "glue",
           "decor", "upcycle"),
          ("手工", "木工", "绘画", "折纸", "编织", "缝纫", "手作", "工具", "装饰", "改造", "粘土", "教程")),
    Topic("beauty", "lifestyle", 420,
          ("makeup", "skincare", "lipstick", "outfit", "fashion", "haircut", "nails", "runway", "style",
           "foundation", "perfume", "dress"),
          ("化妆", "护肤", "口红", "穿搭", "时尚", "发型", "美甲", "走秀", "风格", "粉底", "香水", "连衣裙")),
    Topic("kids", "kids", 360,
          ("cartoon", "nursery", "rhymes", "toys", "kids", "lego", "animation", "alphabet", "dinosaur",
           "princess", "puzzle", "bedtime"),
          ("动画", "儿歌", "玩具", "儿童", "乐高", "卡通", "字母", "恐龙", "公主", "拼图", "睡前故事", "早教")),
)

# Words that carry no topic: part of the noise-word pool.
FILLER_WORDS = {
    "en": ("best", "new", "top10", "howto", "official", "full", "part2", "ultimate", "amazing", "2024",
           "episode", "mustwatch", "vlog", "tips", "easy", "today", "live", "shorts"),
    "zh": ("最新", "必看", "完整版", "合集", "第一集", "推荐", "精彩", "超级", "挑战", "日常", "分享", "终于",
           "真的", "太好了", "直播", "短片"),
}

LANGUAGES = ("en", "zh", "mixed")
DEVICES = truth_lib.DEVICES
_DEVICE_PROBS = (0.55, 0.10, 0.15, 0.20)   # phone, tablet, tv, desktop

# Seed-derivation tags: every part of the generator draws from its own stream
# `default_rng([seed, PART, block])`, so chunking and shard sizes never change
# what is drawn.
_PART_TOPICS, _PART_VIDEOS, _PART_USERS, _PART_PROJECTION = 1, 2, 3, 4
_PART_EMBEDDINGS, _PART_TITLES, _PART_IMPRESSIONS, _PART_MEDIA = 5, 6, 7, 8

# Generation block sizes: constants (not config) so results never depend on them.
_USER_BLOCK = 1024
_VIDEO_BLOCK = 4096

_DAY = 86400
# Older videos were published up to this long before the window starts.
_BACKLOG_SECONDS = 180 * _DAY


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
      image_dim: length of `image_embedding` (1024, like MobileNet features).
      audio_dim: length of `audio_embedding` (128, like VGGish).
      history_length: at most this many previous clicks in `history`.
      cold_start_fraction: fraction of videos published inside the test period
        (never in training impressions); shows whether content features help.
      test_fraction: the last fraction of the time window that is the test split.
      window_days: length of the impression time window, in days.
      start_timestamp: start of the window (seconds since the epoch; default
        2024-01-01 00:00 UTC).
      n_media_videos: videos that get a real thumbnail and WAV clip.
      catalog_rows_per_shard: rows per catalog file.
      impressions_rows_per_shard: rows per train/test file.
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
      activity_sigma: log-scale standard deviation of user activity (how many
        impressions a user gets, relative to the mean).
      device_loyalty: fraction of a user's impressions on their preferred device.
      media_pixel_noise_std: per-pixel Gaussian noise of the raw thumbnails
        (0-255 scale), on top of per-video brightness and stripe-phase jitter.
      media_audio_noise_std: white noise of the raw WAV clips, relative to a
        unit-amplitude tone (before peak normalisation).

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
    image_dim: int = 1024
    audio_dim: int = 128
    history_length: int = 20
    cold_start_fraction: float = 0.1
    test_fraction: float = 0.2
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
    activity_sigma: float = 0.6
    device_loyalty: float = 0.7
    media_pixel_noise_std: float = 18.0
    media_audio_noise_std: float = 0.15

    def __post_init__(self):
        if isinstance(self.language_mix, list):
            self.language_mix = tuple(self.language_mix)
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

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field."""
        d = dataclasses.asdict(self)
        d["language_mix"] = list(self.language_mix)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuiltinConfig":
        """Inverse of `to_dict`; unknown keys raise `ConfigError` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"BuiltinConfig: unknown field(s) {unknown}; known fields are {sorted(names)}.")
        return cls(**d)

    def config_hash(self) -> str:
        """A short hash of the config and the generator version (names cache dirs)."""
        payload = json.dumps({"config": self.to_dict(), "version": DATASET_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    def validate(self) -> None:
        """Raises `ConfigError` (a `ValueError`) naming the first bad field."""

        def fail(name, expected):
            raise ConfigError(f"BuiltinConfig.{name} must be {expected}, got {getattr(self, name)!r}.")

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        def is_num(x):
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
                and math.isfinite(float(x))

        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "a non-negative integer")
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
                     "context_effect", "activity_sigma", "media_pixel_noise_std", "media_audio_noise_std"):
            v = getattr(self, name)
            if not is_num(v) or v < 0:
                fail(name, "a non-negative number")
        if not is_num(self.click_bias):
            fail("click_bias", "a finite number")
        mix = self.language_mix
        if (not isinstance(mix, tuple) or len(mix) != 3 or not all(is_num(x) and x >= 0 for x in mix)
                or abs(sum(mix) - 1.0) > 1e-6):
            fail("language_mix", "three non-negative probabilities (English, Chinese, mixed) summing to 1")

    # Derived quantities -------------------------------------------------------

    @property
    def end_timestamp(self) -> int:
        return self.start_timestamp + self.window_days * _DAY

    @property
    def split_timestamp(self) -> int:
        """First second of the test period."""
        return self.start_timestamp + int(round((1.0 - self.test_fraction) * self.window_days * _DAY))

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


# ---------------------------------------------------------------------------
# Latent variables
# ---------------------------------------------------------------------------


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


class _Latents:
    """Every per-video and per-user latent variable (O(n_videos + n_users) memory)."""

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

        self.language = rng.choice(3, size=V, p=np.asarray(cfg.language_mix, np.float64)).astype(np.int8)
        medians = np.array([t.median_duration_s for t in cfg.topics], dtype=np.float64)
        dur = medians[self.dominant] * np.exp(cfg.duration_sigma * rng.standard_normal(V))
        self.duration = np.clip(np.round(dur, 1), 5.0, 4 * 3600.0).astype(np.float32)
        self.zdur = truth_lib.standardized_log_duration(self.duration).astype(np.float32)

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
        order = np.argsort(self.publish_time, kind="stable")
        self.pop_order = order
        self.pop_pub = self.publish_time[order]
        self.pop_cum = np.cumsum(self.exposure_weight[order])
        # Topic exposure: videos sorted by (dominant topic, publish time); a
        # topic's videos published by t are a contiguous run of this order.
        order = np.lexsort((self.publish_time, self.dominant))
        self.top_order = order
        self.top_key = (self.dominant[order] << 40) + self.publish_time[order]
        self.top_cum = np.cumsum(self.exposure_weight[order])
        self.top_start = np.searchsorted(self.dominant[order], np.arange(self.cfg.n_topics), side="left")

    def sample_popular(self, t: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Videos drawn by exposure weight among those published at times `t` (r ~ U[0,1))."""
        k = np.searchsorted(self.pop_pub, t, side="right")     # >= 1: a backlog video exists
        j = np.searchsorted(self.pop_cum, r * self.pop_cum[k - 1], side="right")
        return self.pop_order[np.minimum(j, k - 1)]

    def sample_topic(self, z: np.ndarray, t: np.ndarray, r: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Videos of dominant topic `z` drawn by exposure weight among those published by `t`.

        Returns (videos, ok): `ok` is False where topic `z` had no published video yet.
        """
        k0 = self.top_start[z]
        k1 = np.searchsorted(self.top_key, (z << 40) + t, side="right")
        ok = k1 > k0
        base = np.where(k0 > 0, self.top_cum[np.maximum(k0 - 1, 0)], 0.0)
        mass = np.where(ok, self.top_cum[np.maximum(k1 - 1, 0)] - base, 0.0)
        j = np.searchsorted(self.top_cum, base + r * mass, side="right")
        j = np.clip(j, k0, np.maximum(k1 - 1, k0))
        return self.top_order[np.minimum(j, self.cfg.n_videos - 1)], ok


# ---------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------


def _projection(cfg: BuiltinConfig) -> Tuple[np.ndarray, np.ndarray]:
    """W_img [image_dim, K], W_aud [audio_dim, K]: each signal dimension of a unit
    topic vector has unit variance (entries N(0, 1))."""
    rng = _rng(cfg.seed, _PART_PROJECTION)
    w_img = rng.standard_normal((cfg.image_dim, cfg.n_topics)).astype(np.float32)
    w_aud = rng.standard_normal((cfg.audio_dim, cfg.n_topics)).astype(np.float32)
    return w_img, w_aud


def _embed(unit: np.ndarray, w: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    signal = unit.astype(np.float64) @ w.astype(np.float64).T
    noise = rng.standard_normal(signal.shape)
    return ((signal + noise_std * noise) / math.sqrt(1.0 + noise_std ** 2)).astype(np.float32)


class _TitleMaker:
    """Draws titles; word choices are vectorised, only the final join is per title."""

    def __init__(self, cfg: BuiltinConfig):
        self.cfg = cfg
        words, is_zh = [], []
        # offsets[lang][k], lengths[lang][k]: where topic k's words in `lang` are in `self.vocab`.
        self.offsets, self.lengths, self.noise_ids = {}, {}, {}
        for lang in ("en", "zh"):
            offs, lens = [], []
            for t in cfg.topics:
                offs.append(len(words))
                lens.append(len(getattr(t, lang)))
                words += getattr(t, lang)
                is_zh += [lang == "zh"] * len(getattr(t, lang))
            filler = list(range(len(words), len(words) + len(FILLER_WORDS[lang])))
            words += FILLER_WORDS[lang]
            is_zh += [lang == "zh"] * len(FILLER_WORDS[lang])
            self.offsets[lang], self.lengths[lang] = np.array(offs), np.array(lens)
            # Noise words: the filler words and every topic's words, uniformly.
            topic_ids = [i for k in range(len(offs)) for i in range(offs[k], offs[k] + lens[k])]
            self.noise_ids[lang] = np.array(filler + topic_ids)
        self.vocab = words
        self.is_zh = np.array(is_zh)

    def make(self, theta: np.ndarray, language: np.ndarray, rng: np.random.Generator) -> List[str]:
        n, K = theta.shape
        # Draw more word slots than the longest title, so that skipping repeated
        # words still leaves enough for the title's length.
        slots = 16
        n_words = rng.integers(3, 9, n)
        is_noise = rng.random((n, slots)) < self.cfg.title_noise_word_fraction
        cum = np.cumsum(theta.astype(np.float64), axis=1)
        r = rng.random((n, slots, 1)) * cum[:, None, -1:]
        topic = np.minimum((r > cum[:, None, :]).sum(axis=2), K - 1)
        # u ** 1.5 skews picks toward the first (most frequent) words of a topic.
        pick = rng.random((n, slots)) ** 1.5
        noise_pick = rng.random((n, slots))
        word_zh = np.where(language[:, None] == 2, rng.random((n, slots)) < 0.5, (language == 1)[:, None])
        ids = np.empty((n, slots), dtype=np.int64)
        for lang, mask in (("en", ~word_zh), ("zh", word_zh)):
            topic_word = self.offsets[lang][topic] + (pick * self.lengths[lang][topic]).astype(np.int64)
            pool = self.noise_ids[lang]
            noise_word = pool[(noise_pick * len(pool)).astype(np.int64)]
            ids = np.where(mask, np.where(is_noise, noise_word, topic_word), ids)
        vocab, is_zh = self.vocab, self.is_zh
        titles = []
        for row, k in zip(ids.tolist(), n_words.tolist()):
            chosen = list(dict.fromkeys(row))[:k]          # distinct words, in draw order
            zh = is_zh[chosen]
            if zh.all():
                text = "".join(vocab[i] for i in chosen)    # Chinese is written without spaces
            elif not zh.any():
                text = " ".join(vocab[i] for i in chosen)
            else:
                text = vocab[chosen[0]]
                for j in range(1, len(chosen)):
                    text += ("" if zh[j] and zh[j - 1] else " ") + vocab[chosen[j]]
            titles.append(text[:1].upper() + text[1:])
        return titles


def _catalog_blocks(cfg: BuiltinConfig, lat: _Latents, w_img: np.ndarray, w_aud: np.ndarray):
    """Yields catalog column dicts, `_VIDEO_BLOCK` videos at a time."""
    titles = _TitleMaker(cfg)
    categories = np.array(cfg.categories, dtype=object)
    for b, v0 in enumerate(range(0, cfg.n_videos, _VIDEO_BLOCK)):
        v1 = min(v0 + _VIDEO_BLOCK, cfg.n_videos)
        rng = _rng(cfg.seed, _PART_EMBEDDINGS, b)
        unit = lat.video_unit[v0:v1]
        image = _embed(unit, w_img, cfg.image_noise_std, rng)
        audio = _embed(unit, w_aud, cfg.audio_noise_std, rng)
        yield {
            "video_id": lat.video_ids[v0:v1],
            "title": np.array(titles.make(lat.video_theta[v0:v1], lat.language[v0:v1],
                                          _rng(cfg.seed, _PART_TITLES, b)), dtype=object),
            "category": categories[lat.category[v0:v1]],
            "duration_s": lat.duration[v0:v1],
            "image_embedding": image,
            "audio_embedding": audio,
        }


# ---------------------------------------------------------------------------
# Impressions
# ---------------------------------------------------------------------------


def _impression_block(cfg: BuiltinConfig, lat: _Latents, block: int) -> Dict[str, np.ndarray]:
    """All impressions of users `[block * _USER_BLOCK, ...)`, as numpy columns.

    Returns a dict with `user` / `video` (indices), `hour`, `device` (index),
    `clicked`, `timestamp`, `prob` (true click probability), `history`
    ([n, history_length] video indices, -1 padded) and `history_len`; rows are
    shuffled within the block.
    """
    rng = _rng(cfg.seed, _PART_IMPRESSIONS, block)
    u0 = block * _USER_BLOCK
    u1 = min(u0 + _USER_BLOCK, cfg.n_users)
    users = np.arange(u0, u1)
    counts = np.maximum(1, rng.poisson(cfg.impressions_per_user * lat.activity[u0:u1]))
    user = np.repeat(users, counts)
    n = user.size

    # When: a random day of the window, an hour near the user's peak hour.
    day = rng.integers(0, cfg.window_days, n)
    hour = np.mod(lat.peak_hour[user] + np.round(rng.normal(0.0, 2.0, n)).astype(np.int64), 24)
    t = cfg.start_timestamp + day * _DAY + hour * 3600 + rng.integers(0, 3600, n)
    order = np.lexsort((t, user))
    user, t = user[order], t[order]
    # Make each user's timestamps strictly increasing (bump ties by a second), so
    # "earlier" is unambiguous for histories: running max of (t - i), per user.
    i = np.arange(n, dtype=np.int64)
    offset = (user - u0).astype(np.int64) << 40
    t = np.maximum.accumulate(offset + t - i) - offset + i
    hour = (t // 3600) % 24

    loyal = rng.random(n) < cfg.device_loyalty
    device = np.where(loyal, lat.pref_device[user], rng.integers(0, len(DEVICES), n))

    # What: the exposure mix of popularity and the user's topics.
    from_popularity = rng.random(n) < cfg.exposure_popularity_fraction
    cum = np.cumsum(lat.user_theta[user].astype(np.float64), axis=1)
    z = np.minimum((rng.random(n)[:, None] * cum[:, -1:] > cum).sum(axis=1), cfg.n_topics - 1)
    r_pop, r_topic = rng.random(n), rng.random(n)
    video_topic, ok = lat.sample_topic(z, t, r_topic)
    video = np.where(from_popularity | ~ok, lat.sample_popular(t, r_pop), video_topic)

    # A user sees a video at most once: keep the first impression of each pair.
    _, first = np.unique((user - u0).astype(np.int64) * cfg.n_videos + video, return_index=True)
    keep = np.sort(first)
    user, t, hour, device, video = user[keep], t[keep], hour[keep], device[keep], video[keep]
    n = user.size

    logit = truth_lib.pair_logits(lat.user_unit[user], lat.user_bias[user], lat.video_unit[video],
                                  lat.zpop[video], lat.zdur[video], device, hour, cfg.click_params())
    prob = truth_lib.sigmoid(logit)
    clicked = (rng.random(n) < prob).astype(np.int64)

    # History: this user's clicks strictly before each row, newest first.
    before = np.cumsum(clicked) - clicked                  # clicks in the block before each row
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    group_start = np.repeat(before[starts], np.diff(np.r_[starts, n]))
    n_prev = before - group_start                          # the user's own earlier clicks
    clicked_videos = video[clicked == 1]
    L = cfg.history_length
    hist_len = np.minimum(n_prev, L)
    idx = (before - 1)[:, None] - np.arange(L)[None, :]
    valid = np.arange(L)[None, :] < hist_len[:, None]
    history = np.where(valid, clicked_videos[np.clip(idx, 0, max(clicked_videos.size - 1, 0))]
                       if clicked_videos.size else -1, -1).astype(np.int32)

    perm = rng.permutation(n)
    return {"user": user[perm], "video": video[perm], "hour": hour[perm], "device": device[perm],
            "clicked": clicked[perm], "timestamp": t[perm], "prob": prob[perm].astype(np.float32),
            "history": history[perm], "history_len": hist_len[perm]}


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class _ShardWriter:
    """Buffers column chunks and writes `rows_per_shard`-row files as they fill.

    Extra arrays (`aux`: the true click probability and the label) are written
    next to each shard as `.npy` files under `truth/`, aligned row by row.
    """

    def __init__(self, root: str, subdir: str, ext: str, schema, rows_per_shard: int, write_table,
                 aux_dirs: Optional[Dict[str, str]] = None, finish=None):
        self.root, self.subdir, self.ext, self.schema = root, subdir, ext, schema
        # finish(table) -> table: last conversions just before writing (keeps the buffer compact).
        self.finish = finish
        self.rows_per_shard = rows_per_shard
        self.write_table = write_table
        self.aux_dirs = aux_dirs or {}
        self.chunks: List[Dict[str, np.ndarray]] = []
        self.n_buffered = 0
        self.files: List[str] = []
        self.aux_files: Dict[str, List[str]] = {k: [] for k in self.aux_dirs}
        self.rows = 0

    def add(self, columns: Dict[str, np.ndarray]):
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        self.chunks.append(columns)
        self.n_buffered += n
        while self.n_buffered >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def close(self):
        if self.n_buffered:
            self._flush(self.n_buffered)

    def _flush(self, n: int):
        merged = {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}
        head = {k: v[:n] for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        self.n_buffered -= n
        self.chunks = [rest] if self.n_buffered else []
        name = f"part-{len(self.files):05d}"
        rel = f"{self.subdir}/{name}.{self.ext}"
        table = {k: v for k, v in head.items() if k not in self.aux_dirs}
        if self.finish is not None:
            table = self.finish(table)
        self.write_table(table, os.path.join(self.root, rel), self.schema)
        self.files.append(rel)
        for key, aux_dir in self.aux_dirs.items():
            aux_rel = f"{aux_dir}/{name}.npy"
            _save_npy(os.path.join(self.root, aux_rel), head[key])
            self.aux_files[key].append(aux_rel)
        self.rows += n


def _save_npy(path: str, array: np.ndarray):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def _progress(progress: bool, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False, dynamic_ncols=True)


def _write_media(root: str, cfg: BuiltinConfig, lat: _Latents) -> Tuple[List[str], int]:
    """Writes thumbnails, WAV clips and media.csv; returns (files, count)."""
    import csv
    import io

    if cfg.n_media_videos == 0:
        return [], 0
    chosen = np.sort(_rng(cfg.seed, _PART_MEDIA).choice(cfg.n_videos, size=cfg.n_media_videos, replace=False))
    media_dir = os.path.join(root, "media")
    os.makedirs(os.path.join(media_dir, "thumbnails"), exist_ok=True)
    os.makedirs(os.path.join(media_dir, "audio"), exist_ok=True)
    rows, files = [], []
    for k, v in enumerate(chosen):
        rng = _rng(cfg.seed, _PART_MEDIA, 1 + int(v))
        vid = lat.video_ids[v]
        theta = lat.video_theta[v].astype(np.float64)
        fmt = "jpg" if k % 3 == 2 else "png"   # mostly PNG, some JPEG: readers must handle both
        thumb_rel = f"thumbnails/{vid}.{fmt}"
        audio_rel = f"audio/{vid}.wav"
        with open(os.path.join(media_dir, thumb_rel), "wb") as f:
            f.write(media_lib.encode_image(media_lib.render_thumbnail(theta, rng, cfg.media_pixel_noise_std), fmt))
        with open(os.path.join(media_dir, audio_rel), "wb") as f:
            f.write(media_lib.encode_wav(media_lib.render_audio(theta, rng, cfg.media_audio_noise_std)))
        rows.append((vid, thumb_rel, audio_rel))
        files += ["media/" + thumb_rel, "media/" + audio_rel]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video_id", "thumbnail_path", "audio_path"])
    writer.writerows(rows)
    with open(os.path.join(media_dir, "media.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return files, len(rows)


def _write_truth_latents(root: str, cfg: BuiltinConfig, lat: _Latents, w_img, w_aud) -> Tuple[List[str], List[str]]:
    videos = {
        "video_id": lat.video_ids.astype(str),
        "theta": lat.video_theta,
        "theta_unit": lat.video_unit,
        "dominant_topic": lat.dominant,
        "popularity": lat.popularity,
        "zpop": lat.zpop,
        "zdur": lat.zdur,
        "duration_s": lat.duration,
        "publish_time": lat.publish_time,
        "is_cold_start": lat.is_cold,
        "language": lat.language,
        "category_index": lat.category.astype(np.int64),
    }
    users = {
        "user_id": lat.user_ids.astype(str),
        "theta": lat.user_theta,
        "theta_unit": lat.user_unit,
        "user_bias": lat.user_bias,
        "activity": lat.activity.astype(np.float32),
        "preferred_device": lat.pref_device,
        "peak_hour": lat.peak_hour,
    }
    tdir = os.path.join(root, truth_lib.TRUTH_DIR)
    for name, arr in videos.items():
        _save_npy(os.path.join(tdir, "videos", name + ".npy"), arr)
    for name, arr in users.items():
        _save_npy(os.path.join(tdir, "users", name + ".npy"), arr)
    _save_npy(os.path.join(tdir, "projections", "W_image.npy"), w_img)
    _save_npy(os.path.join(tdir, "projections", "W_audio.npy"), w_aud)
    return list(videos), list(users)


def _generate_into(root: str, cfg: BuiltinConfig, fmt: str, progress: bool) -> dict:
    from tfrec_video.data import write_table

    ext = FORMATS[fmt]
    cat_schema = catalog_schema(cfg.image_dim, cfg.audio_dim)
    imp_schema = impressions_schema(cfg.history_length)
    os.makedirs(root, exist_ok=True)

    lat = _Latents(cfg)
    w_img, w_aud = _projection(cfg)

    # Catalog.
    catalog = _ShardWriter(root, "catalog", ext, cat_schema, cfg.catalog_rows_per_shard, write_table)
    with _progress(progress, cfg.n_videos, "built-in catalog", "video") as bar:
        for block in _catalog_blocks(cfg, lat, w_img, w_aud):
            catalog.add(block)
            bar.update(len(block["video_id"]))
        catalog.close()

    # Impressions, 1024 users at a time.
    split_t = cfg.split_timestamp
    vid_str = lat.video_ids.astype(str)          # fixed-width unicode: fast fancy indexing
    uid_str = lat.user_ids.astype(str)
    devices = np.array(DEVICES)
    tdir = truth_lib.TRUTH_DIR

    def finish(table):
        # History is buffered as video indices (compact) and written as ragged
        # lists of ids: the fastest input of write_table for list columns.
        hist, lens = table.pop("history"), table.pop("_history_len")
        ids = vid_str[np.maximum(hist, 0)]
        table["history"] = [row[:k] for row, k in zip(ids, lens.tolist())]
        return table

    writers = {
        split: _ShardWriter(root, split, ext, imp_schema, cfg.impressions_rows_per_shard, write_table,
                            aux_dirs={"_prob": f"{tdir}/click_prob/{split}", "_clicked": f"{tdir}/clicked/{split}"},
                            finish=finish)
        for split in ("train", "test")
    }
    clicks = {"train": 0, "test": 0}
    videos_seen = {"train": np.zeros(cfg.n_videos, bool), "test": np.zeros(cfg.n_videos, bool)}
    n_blocks = (cfg.n_users + _USER_BLOCK - 1) // _USER_BLOCK
    with _progress(progress, cfg.n_users, "built-in impressions", "user") as bar:
        for b in range(n_blocks):
            rows = _impression_block(cfg, lat, b)
            is_test = rows["timestamp"] >= split_t
            for split, mask in (("train", ~is_test), ("test", is_test)):
                clicks[split] += int(rows["clicked"][mask].sum())
                videos_seen[split][rows["video"][mask]] = True
                writers[split].add({
                    "user_id": uid_str[rows["user"][mask]],
                    "history": rows["history"][mask],
                    "_history_len": rows["history_len"][mask],
                    "hour": rows["hour"][mask],
                    "device": devices[rows["device"][mask]],
                    "video_id": vid_str[rows["video"][mask]],
                    "clicked": rows["clicked"][mask],
                    "timestamp": rows["timestamp"][mask],
                    "_prob": rows["prob"][mask],
                    "_clicked": rows["clicked"][mask].astype(np.int8),
                })
            bar.update(min(_USER_BLOCK, cfg.n_users - b * _USER_BLOCK))
        for w in writers.values():
            w.close()
    for split, w in writers.items():
        if w.rows == 0:
            raise ConfigError(
                f"BuiltinConfig produced no {split} impressions; raise n_users or impressions_per_user "
                f"(or move test_fraction away from 0/1)."
            )

    media_files, n_media = _write_media(root, cfg, lat)
    video_arrays, user_arrays = _write_truth_latents(root, cfg, lat, w_img, w_aud)

    # Oracle AUC on the test split (labels and probabilities are in truth/).
    aux = writers["test"].aux_files
    test_prob = np.concatenate([np.load(os.path.join(root, f), allow_pickle=False) for f in aux["_prob"]])
    test_clicked = np.concatenate([np.load(os.path.join(root, f), allow_pickle=False) for f in aux["_clicked"]])
    oracle = truth_lib.auc(test_clicked, test_prob)
    del test_prob, test_clicked

    truth_json = {
        "version": DATASET_VERSION,
        "formula": ("logit = click_bias + click_scale * cos(theta_u, theta_v) + user_bias_u "
                    "+ popularity_click_weight * zpop_v + context_effect * (device_duration_coef[device] * zdur_v "
                    "+ hour_coef[hour]); p = sigmoid(logit); zdur_v = (log(duration_s) - duration_log_center) "
                    "/ duration_log_scale; image_embedding = (W_image @ theta_unit_v + image_noise_std * N(0, I)) "
                    "/ sqrt(1 + image_noise_std^2), audio likewise"),
        "click": cfg.click_params(),
        "device_duration_coef": dict(truth_lib.DEVICE_DURATION_COEF),
        "hour_coef": truth_lib.HOUR_COEF.tolist(),
        "duration_log_center": truth_lib.DURATION_LOG_CENTER,
        "duration_log_scale": truth_lib.DURATION_LOG_SCALE,
        "devices": list(DEVICES),
        "topics": [t.name for t in cfg.topics],
        "topic_categories": [t.category for t in cfg.topics],
        "categories": list(cfg.categories),
        "languages": list(LANGUAGES),
        "popularity_sigma": cfg.popularity_sigma,
        "popularity_exponent": cfg.popularity_exponent,
        "image_noise_std": cfg.image_noise_std,
        "audio_noise_std": cfg.audio_noise_std,
        "time": {"start": cfg.start_timestamp, "split": split_t, "end": cfg.end_timestamp},
        "video_arrays": video_arrays,
        "user_arrays": user_arrays,
        "projections": {"image": f"{tdir}/projections/W_image.npy", "audio": f"{tdir}/projections/W_audio.npy"},
        "click_prob_files": {s: w.aux_files["_prob"] for s, w in writers.items()},
        "clicked_files": {s: w.aux_files["_clicked"] for s, w in writers.items()},
    }
    _write_json(os.path.join(root, tdir, "truth.json"), truth_json)

    n_train, n_test = writers["train"].rows, writers["test"].rows
    cold = lat.is_cold
    manifest = {
        "name": "tfrec_video built-in dataset",
        "version": DATASET_VERSION,
        "format": fmt,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "schema": {
            "image_dim": cfg.image_dim,
            "audio_dim": cfg.audio_dim,
            "history_length": cfg.history_length,
            "catalog": cat_schema.to_dict(),
            "impressions": imp_schema.to_dict(),
        },
        "counts": {
            "videos": cfg.n_videos,
            "cold_start_videos": int(cold.sum()),
            "cold_start_videos_in_test": int((cold & videos_seen["test"]).sum()),
            "users": cfg.n_users,
            "train_impressions": n_train,
            "test_impressions": n_test,
            "train_clicks": clicks["train"],
            "test_clicks": clicks["test"],
            "media_videos": n_media,
            "topics": cfg.n_topics,
            "categories": len(cfg.categories),
        },
        "ctr": {
            "train": clicks["train"] / n_train,
            "test": clicks["test"] / n_test,
            "overall": (clicks["train"] + clicks["test"]) / (n_train + n_test),
        },
        "oracle": {"test_auc": oracle},
        "time": {"start": cfg.start_timestamp, "split": split_t, "end": cfg.end_timestamp},
        "files": {
            "catalog": catalog.files,
            "train": writers["train"].files,
            "test": writers["test"].files,
            "media_csv": "media/media.csv" if n_media else None,
            "media": media_files,
            "truth": tdir,
        },
    }
    # Last: its presence marks the dataset complete.
    _write_json(os.path.join(root, "dataset.json"), manifest)
    return manifest


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

MANIFEST = "dataset.json"


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}.")
    return format


def _remove_tree(path: str):
    shutil.rmtree(path, ignore_errors=True)


def generate(out_dir: str, config: Optional[BuiltinConfig] = None, format: str = "parquet",
             progress: bool = True, overwrite: bool = False) -> dict:
    """Generates the built-in dataset into `out_dir`.

    Everything is first written into a temporary sibling folder, with
    `dataset.json` written last, and the folder is then renamed to `out_dir`:
    an interrupted run never leaves something that looks complete.

    Args:
      out_dir: destination folder (local). It must not exist, or be empty,
        unless `overwrite`.
      config: a `BuiltinConfig`; default `BuiltinConfig()`.
      format: `"parquet"`, `"tfrecord"` or `"csv"` for the catalog and
        impression files.
      progress: show tqdm progress bars.
      overwrite: replace an existing non-empty `out_dir`.

    Returns:
      The manifest (the content of `dataset.json`; its file paths are
      relative to `out_dir`).

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ConfigError: a bad config.

    Example:

    >>> m = generate("/tmp/tiny", BuiltinConfig.tiny(), format="tfrecord", progress=False)  # doctest: +SKIP
    >>> m["ctr"]["train"]                                                                 # doctest: +SKIP
    0.12
    """
    cfg = BuiltinConfig() if config is None else config
    if not isinstance(cfg, BuiltinConfig):
        raise TypeError(f"config must be a BuiltinConfig, got {type(cfg).__name__}.")
    cfg.validate()
    fmt = _check_format(format)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)) and not overwrite:
        raise FileExistsError(f"{out_dir!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{time.time_ns()}")
    try:
        manifest = _generate_into(tmp, cfg, fmt, progress)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        _remove_tree(tmp)
        raise
    return manifest


def _move_into_place(tmp: str, out_dir: str, overwrite: bool):
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    elif os.path.lexists(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir!r} appeared while generating; pass overwrite=True to replace it.")
        trash = f"{tmp}.old"
        os.rename(out_dir, trash)
        os.rename(tmp, out_dir)
        _remove_tree(trash)
        return
    os.rename(tmp, out_dir)


def load_manifest(path: str) -> dict:
    """Reads a generated dataset's `dataset.json`.

    Args:
      path: the dataset folder, or its `dataset.json`.

    Returns:
      The manifest dict, with `root` (the absolute dataset folder) added and
      every path under `files` made absolute.

    Raises:
      FileNotFoundError: no `dataset.json`: not a built-in dataset, or an
        incomplete (interrupted) generation.

    Example:

    >>> m = load_manifest(ensure_builtin())      # doctest: +SKIP
    >>> m["files"]["train"][:1]                  # doctest: +SKIP
    ['/root/.cache/tfrec_video/builtin/builtin-parquet-1a2b3c4d5e6f/train/part-00000.parquet']
    """
    path = os.path.abspath(os.fspath(path))
    root, file = (os.path.dirname(path), path) if path.endswith(".json") else (path, os.path.join(path, MANIFEST))
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"{root!r} has no {MANIFEST}: it is not a generated built-in dataset, or its generation was "
            "interrupted. Regenerate it with `tfrec-video generate-data --out DIR` or ensure_builtin()."
        )
    with open(file, "r", encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["root"] = root
    files = manifest.get("files", {})
    for key, value in list(files.items()):
        if isinstance(value, list):
            files[key] = [os.path.join(root, v) for v in value]
        elif isinstance(value, str):
            files[key] = os.path.join(root, value)
    return manifest


def default_cache_dir() -> str:
    """`$TFREC_VIDEO_CACHE` if set, else `~/.cache/tfrec_video/builtin`."""
    env = os.environ.get("TFREC_VIDEO_CACHE")
    return os.path.abspath(os.path.expanduser(env)) if env else os.path.expanduser(
        os.path.join("~", ".cache", "tfrec_video", "builtin"))


def _is_complete(path: str, cfg: BuiltinConfig, fmt: str) -> bool:
    try:
        m = load_manifest(path)
    except (FileNotFoundError, ValueError, OSError):
        return False
    if m.get("version") != DATASET_VERSION or m.get("format") != fmt or m.get("config") != cfg.to_dict():
        return False
    files = m["files"]
    listed = files["catalog"] + files["train"] + files["test"] + files.get("media", [])
    return all(os.path.exists(f) for f in listed) and os.path.isdir(os.path.join(m["root"], truth_lib.TRUTH_DIR))


def _remove_stale_temps(cache_dir: str, name: str):
    """Removes temp folders of generations whose process is gone (killed runs)."""
    prefix = f".{name}.tmp-"
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        try:
            pid = int(entry[len(prefix):].split("-")[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            _remove_tree(os.path.join(cache_dir, entry))
        except (PermissionError, OSError):
            pass


def ensure_builtin(cache_dir: Optional[str] = None, config: Optional[BuiltinConfig] = None,
                   format: str = "parquet", progress: bool = True) -> str:
    """Returns the folder of the built-in dataset for `config`, generating it if needed.

    Datasets are cached under `cache_dir/builtin-<format>-<hash>`, where the
    hash covers the whole config and the generator version, so changing any
    field gives a new dataset. A folder without a complete `dataset.json`
    (an interrupted run) is regenerated.

    Args:
      cache_dir: cache root; default `default_cache_dir()`
        (`$TFREC_VIDEO_CACHE` or `~/.cache/tfrec_video/builtin`).
      config: a `BuiltinConfig`; default `BuiltinConfig()`.
      format: `"parquet"`, `"tfrecord"` or `"csv"`.
      progress: show progress bars when generating.

    Returns:
      The dataset folder (absolute path).

    Example:

    >>> path = ensure_builtin(config=BuiltinConfig.tiny())   # doctest: +SKIP
    >>> load_manifest(path)["counts"]["videos"]              # doctest: +SKIP
    150
    """
    cfg = BuiltinConfig() if config is None else config
    fmt = _check_format(format)
    root = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else default_cache_dir()
    name = f"builtin-{fmt}-{cfg.config_hash()}"
    path = os.path.join(root, name)
    if _is_complete(path, cfg, fmt):
        return path
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root, name)
    try:
        generate(path, cfg, fmt, progress=progress, overwrite=True)
    except OSError:
        # Another process may have finished the same dataset first.
        if not _is_complete(path, cfg, fmt):
            raise
    return path


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Registers the `generate-data` sub-command on an argparse `subparsers` object.

    The sub-command's handler is stored as the `func` default: call
    `args.func(args)` after parsing; it returns an exit status.

    Example:

    >>> parser = argparse.ArgumentParser(prog="tfrec-video")
    >>> add_cli(parser.add_subparsers(dest="command")) is not None
    True
    >>> args = parser.parse_args(["generate-data", "--out", "/tmp/d", "--tiny"])
    >>> args.tiny, args.format
    (True, 'parquet')
    """
    p = subparsers.add_parser(
        "generate-data",
        help="generate the built-in synthetic dataset (planted truth)",
        description="Generate the built-in synthetic video-recommendation dataset: catalog, "
                    "train/test impressions, raw media and the planted ground truth.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--format", choices=sorted(FORMATS), default="parquet", help="file format (default: parquet)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.add_argument("--n-videos", type=int, default=None, help="catalog size")
    p.add_argument("--n-users", type=int, default=None, help="number of users")
    p.add_argument("--impressions-per-user", type=float, default=None, help="mean impressions per user")
    p.add_argument("--tiny", action="store_true", help="the tiny test config (150 videos, 120 users)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_generate_cli)
    return p


def run_generate_cli(args) -> int:
    """Handler of `tfrec-video generate-data`; prints a summary and returns 0."""
    overrides = {k: v for k, v in (("seed", args.seed), ("n_videos", args.n_videos), ("n_users", args.n_users),
                                    ("impressions_per_user", args.impressions_per_user)) if v is not None}
    try:
        cfg = BuiltinConfig.tiny(**overrides) if args.tiny else BuiltinConfig(**overrides)
    except ConfigError as e:
        print(f"tfrec-video generate-data: {e}", file=sys.stderr)
        return 2
    start = time.time()
    try:
        m = generate(args.out, cfg, format=args.format, progress=not args.no_progress,
                     overwrite=getattr(args, "overwrite", False))
    except FileExistsError as e:
        print(f"tfrec-video generate-data: {e}", file=sys.stderr)
        return 2
    print(summary(m, os.path.abspath(args.out), time.time() - start))
    return 0


def summary(manifest: dict, root: str, seconds: Optional[float] = None) -> str:
    """A one-paragraph description of a generated dataset."""
    c, ctr = manifest["counts"], manifest["ctr"]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    n_files = len(manifest["files"]["train"]) + len(manifest["files"]["test"])
    media = (f" {c['media_videos']} videos have raw media (thumbnails + WAV) listed in media/media.csv."
             if c["media_videos"] else "")
    return (
        f"Generated the built-in dataset ({manifest['format']}, seed {manifest['config']['seed']}) in {root}{took}: "
        f"{c['videos']} videos ({c['cold_start_videos']} cold-start, published only in the test period, "
        f"{c['cold_start_videos_in_test']} of them shown), {c['users']} users, "
        f"{c['train_impressions']} train and {c['test_impressions']} test impressions in {n_files} files "
        f"(CTR {ctr['train']:.1%} train, {ctr['test']:.1%} test; oracle test AUC "
        f"{manifest['oracle']['test_auc']:.3f}).{media} Catalog: catalog/, impressions: train/ and test/, "
        f"ground truth for evaluation only: truth/, manifest: dataset.json."
    )
