"""The built-in dataset: a seeded video-recommendation benchmark with a planted truth.

`tfrec-video` uses this dataset when it is given no data. Everything is drawn
from a known generative story, so besides training data it yields the *truth*:
the exact click probability of every impression, from which the oracle AUC and
oracle Recall@K (the best any model can do) are computed
(`tfrec_video.datasets.builtin.truth`).

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
   are older than the impression window, the other half are published inside
   it before the test period (in the train or validation period); a
   `cold_start_fraction` of videos are published inside the first half of the
   test period, so they are in no train or validation impression.
3. **Titles.** 3-8 words. Each word is, with probability
   `title_noise_word_fraction`, a noise word (drawn uniformly from filler words
   such as "best"/"最新" and all topics' words, so it may point at a wrong
   topic); otherwise a word of a topic drawn from `theta_v` (frequent words of a
   topic are drawn more often). A title is English, Chinese or mixed with
   probabilities `language_mix`; Chinese words are joined without spaces.
   With `language_shift = p` (off by default) the language follows the time
   instead: each topic has a training language (half the topics English, half
   Chinese); a share `p` of a topic's videos published before the test period
   are titled in its training language, and a share `p` of its cold-start
   videos in the other language.
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
   `tfrec_video.datasets.builtin.truth` (topic affinity `cos(theta_u, theta_v)` scaled
   by `click_scale`, `click_bias`, the user's bias, a small popularity term and
   a device x duration and hour-of-day context term).
   **Watch time.** A click's `watch_fraction` (0-1) is drawn from
   `Beta(m * c, (1 - m) * c)` around its true mean `m = sigmoid(watch_bias +
   watch_affinity_scale * cos(theta_u, theta_v) + watch_quality_scale *
   quality_v - watch_duration_scale * zdur_v)` (`truth.watch_logits`), where
   `quality_v ~ N(0, 1)` is a per-video latent independent of popularity and
   of the click logit: a video can be clicked often and left early.
   `watch_seconds = watch_fraction * duration_s`; both are 0 without a click.
   Drawn from their own random stream, so every other column is what it was
   before watch time existed; `GroundTruth.watch_mean` is the oracle.
9. **History** of an impression: the ids of the videos this user clicked
   strictly before it, newest first, at most `history_length`.
10. **Split by time.** Impressions in the last `test_fraction` of the window are
    the test split; those in the `validation_fraction` of the window just
    before it are the validation split (the latest training-period data, held
    out for choosing epochs and early stopping; none when it is 0); the
    earlier ones are the train split. The split only labels rows: nothing drawn
    depends on it, so changing `validation_fraction` moves rows between train
    and validation and leaves the test split byte-identical.
11. **Raw media.** `n_media_videos` videos get a real 64x64 PNG (every third a
    JPEG) thumbnail whose colour and stripes depend on the dominant topic, and a
    1 s 16 kHz WAV clip with tones at topic frequencies weighted by `theta_v`
    (`tfrec_video.datasets.builtin.media`).

Daily service (`days = N > 0`, off by default)
-----------------------------------------------

For benchmarking daily retraining (train on the days before day `d`, or
warm-start on day `d - 1` only, then evaluate on day `d`), the window becomes
a service that runs day after day. What changes (everything else, and every
latent variable but the publish times, is as without days):

* **Day.** An impression's day is the day of the window its timestamp falls
  in (`(timestamp - start_timestamp) // 86400`, 0 to `window_days - 1`). The
  last `N` days are the *benchmark days* (`BuiltinConfig.benchmark_days`,
  `benchmark_days(path)`); the earlier days are there to train on.
* **New videos every day.** A quarter of the videos were published before the
  window; the others at uniform times inside it, so every day has new videos
  (`cold_start_fraction` is unused; the cold-start videos are those published
  in the test period).
* **New users every day.** A `new_user_fraction` of the users arrive on a
  uniform day 1..window_days-1 (the others on day 0); a user has no
  impression before their first-active day and `impressions_per_user *
  activity` impressions per window, in proportion to their active days.
* **Popularity drifts.** A video's exposure weight on a day is
  `pop ** popularity_exponent * (0.1 + 0.9 * 0.5 ** (age / freshness_half_life_days))
  * m[day, dominant topic]`, with `age` its age in days at the start of the
  day: new videos are shown up to ten times as much as old ones. `m` is each
  topic's exposure multiplier, `exp(topic_drift * random walk)` (1 on day 0),
  which also weighs the topic a user is shown (`z ~ theta_u * m[day]`).
  Only exposure drifts: clicks keep the click model of step 8, so the truth
  and the oracle are exact; `truth/truth.json` records the schedule
  (`days`) and `truth/days/topic_multiplier.npy` the multipliers.
* **History** is still the user's clicks strictly before the row.
* **One table a day.** Besides train/validation/test (split by time as
  always, with the columns of every other dataset), each day's impressions
  are written to `days/<ddd>/`, in the same format with one more column,
  `day` (int64): read them with `impressions_schema(history_length,
  day=True)`. `day_files(path, first, last)` lists the files of days
  `first..last` for any reader (`read_table`, `impressions_dataset`,
  `fit_model`), and `GroundTruth.day_click_prob(d)` / `day_clicked(d)` hold
  their truth. The manifest's `days` entry gives each day's counts: its
  impressions and clicks, those of videos published that day or the day
  before (`fresh_video_impressions`), its new users, the videos shown for the
  first time, and the oracle AUC.

`BuiltinConfig.daily()` (`tfrec-video generate-data --daily`) is a 12-day
service with 6 benchmark days, 3000 videos and 3000 users, in about a second.
Measured on it: about 85k impressions (4.8k on day 0, growing to 9.3k on day
11 as users arrive); on each benchmark day 39-50% of the impressions are of
videos published that day or the day before (16-25% that same day), 165-205
videos are shown for the first time, and 5-7% of the impressions are of the
126-149 users first seen that day; oracle AUC 0.82-0.85 a day. Memory: the
exposure weights of every day are held (`24 * window_days * n_videos`
bytes), and each day's table buffers up to a shard of rows (measured: 100k
videos, 50k users, 56 days, 2.2M impressions in 22 s).

Output layout (`generate`)::

    out_dir/
      dataset.json                 manifest; written last (its presence means "complete")
      catalog/part-00000.parquet   video_id, title, category, duration_s, image_embedding, audio_embedding
      train/part-00000.parquet     user_id, history, hour, device, video_id, clicked, timestamp,
                                   watch_fraction, watch_seconds
      validation/part-00000.parquet  (only when validation_fraction > 0)
      test/part-00000.parquet
      days/000/part-00000.parquet  with days only: each day's impressions, with a day column
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
1523
>>> path = ensure_builtin()   # the default config, cached    # doctest: +SKIP
"""

# Where things are: `topics` (TOPICS, filler words, languages, devices),
# `config` (BuiltinConfig, seed derivation), `latents` (per-video and per-user
# latent variables), `titles`, `catalog` (embeddings, catalog rows),
# `impressions`, `media` (raw PNG/JPEG/WAV), `truth` (the click model,
# GroundTruth), `writer` (files, truth/, dataset.json) and `api` (generate,
# ensure_builtin, load_manifest, day_files). The daily service (`days`) lives in
# `latents` (its schedule and exposure weights), `impressions` and `writer`. Importing any of them first imports the
# `tfrec_video` package, which sets TF_USE_LEGACY_KERAS before TensorFlow loads.

from tfrec_video.datasets.builtin.api import (
    MANIFEST,
    benchmark_days,
    day_files,
    default_cache_dir,
    ensure_builtin,
    generate,
    load_manifest,
)
from tfrec_video.datasets.builtin.config import DATASET_VERSION, FORMATS, BuiltinConfig
from tfrec_video.datasets.builtin.topics import DEVICES, FILLER_WORDS, LANGUAGES, TOPICS, Topic
from tfrec_video.datasets.builtin.truth import GroundTruth, auc, oracle_auc

__all__ = [
    "BuiltinConfig",
    "DATASET_VERSION",
    "DEVICES",
    "FILLER_WORDS",
    "FORMATS",
    "GroundTruth",
    "LANGUAGES",
    "MANIFEST",
    "TOPICS",
    "Topic",
    "auc",
    "benchmark_days",
    "day_files",
    "default_cache_dir",
    "ensure_builtin",
    "generate",
    "load_manifest",
    "oracle_auc",
]
