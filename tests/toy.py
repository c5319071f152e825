"""Shared test helpers: a tiny, seeded in-memory dataset for model tests (independent of the built-in
generator), small model settings, and process and log helpers (`kill_when`, `LogRecords`)."""

import logging

import numpy as np

TOPIC_WORDS = [["cat", "kitten", "猫"], ["football", "goal", "足球"], ["cooking", "recipe", "烹饪"]]


def toy_data(n_videos=60, n_users=40, n_rows=1200, image_dim=8, audio_dim=4, history_length=5, seed=0,
             minimal=False, watch=False):
    """(catalog, impressions) column dicts; impressions carry the joined catalog features.

    Users click videos of their favourite topic far more often, so a model can learn it.
    `minimal` keeps only video_id + title and user_id, video_id, clicked. `watch` adds a clicked row's
    `watch_fraction` (0 when not clicked): high for a "good" video (its audio_embedding's first value > 0)
    of the user's topic, drawn from its own generator so every other column is unchanged.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 3, n_videos)
    catalog = {
        "video_id": np.array([f"v{i}" for i in range(n_videos)], object),
        "title": np.array([" ".join(rng.choice(TOPIC_WORDS[t], 3)) for t in topic], object),
        "category": np.array([f"c{t}" for t in topic], object),
        "duration_s": rng.uniform(10, 600, n_videos).astype(np.float32),
        "image_embedding": (np.eye(3)[topic] @ rng.normal(size=(3, image_dim)) + 0.3 * rng.normal(size=(n_videos, image_dim))).astype(np.float32),
        "audio_embedding": rng.normal(size=(n_videos, audio_dim)).astype(np.float32),
    }
    user_topic = rng.integers(0, 3, n_users)
    users = rng.integers(0, n_users, n_rows)
    videos = rng.integers(0, n_videos, n_rows)
    p = np.where(topic[videos] == user_topic[users], 0.6, 0.05)
    clicked = (rng.random(n_rows) < p).astype(np.int64)
    history = np.full((n_rows, history_length), "", object)
    for r in range(n_rows):
        liked = np.flatnonzero(topic == user_topic[users[r]])
        k = rng.integers(0, history_length + 1)
        history[r, :k] = catalog["video_id"][rng.choice(liked, k)]
    impressions = {
        "user_id": np.array([f"u{u}" for u in users], object),
        "history": history,
        "hour": rng.integers(0, 24, n_rows).astype(np.int64),
        "device": rng.choice(np.array(["phone", "tv", "desktop"], object), n_rows),
        "video_id": catalog["video_id"][videos],
        "clicked": clicked,
    }
    if watch:
        good = catalog["audio_embedding"][:, 0] > 0
        mean = np.where(good[videos], 0.75, 0.2) + np.where(topic[videos] == user_topic[users], 0.15, 0.0)
        fraction = np.random.default_rng(seed + 1).beta(mean * 6, (1 - mean) * 6)
        impressions["watch_fraction"] = np.where(clicked == 1, fraction, 0.0).astype(np.float32)
    if minimal:
        catalog = {k: catalog[k] for k in ("video_id", "title")}
        impressions = {k: impressions[k] for k in ("user_id", "video_id", "clicked")}
    for name, values in catalog.items():
        if name != "video_id":
            impressions[name] = values[videos]
    return catalog, impressions


# A model small enough to train in seconds on toy_data().
SMALL = dict(embedding_dim=16, id_dim=8, title_vocabulary_size=80, title_filters=8, title_dim=8, media_dim=8,
             query_hidden_units=(32,), candidate_hidden_units=(32,), ranking_hidden_units=(16,))


def small_model(catalog, impressions, epochs=0, **overrides):
    """A compiled `VideoRecModel` with the SMALL config (plus `overrides`), fitted `epochs` times."""
    import tfrec_video  # noqa: F401  (before TensorFlow)
    import tensorflow as tf
    from tfrec_video.features import adapt
    from tfrec_video.models import ModelConfig, VideoRecModel

    tf.keras.utils.set_random_seed(0)
    vocab = adapt(catalog, impressions, title_vocabulary_size=80,
                  media_components=overrides.get("media_components", 16))
    model = VideoRecModel(ModelConfig(**{**SMALL, **overrides}), vocab, catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(5e-3))
    if epochs:
        model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(256), epochs=epochs, verbose=0)
    return model


# A PNG file's first bytes (the report plots), and a small ModelConfig for run-config tests
# (`tfrec-video train` and `tfrec-video tune` on the tiny built-in data).
PNG = b"\x89PNG\r\n\x1a\n"
SMALL_MODEL = {"embedding_dim": 16, "id_dim": 8, "title_vocabulary_size": 300, "title_filters": 8,
               "title_dim": 8, "media_dim": 8, "media_components": 4, "query_hidden_units": [16],
               "candidate_hidden_units": [16], "ranking_hidden_units": [16], "user_oov_buckets": 4,
               "video_oov_buckets": 4}


def kill_when(command, ready, *, env=None, deadline_s=300, poll_s=0.1):
    """Start `command`, SIGKILL it as soon as `ready()` is true, and return its return code and stderr.

    The kill-and-resume tests (train, tune) all need the same dance: poll a condition on the files the
    process writes, kill -9 at that moment, and make sure nothing is left running whatever happens.

    Args:
      command: the argv to run.
      ready: a no-argument callable, polled every `poll_s` seconds while the process runs.
      env: the process environment.
      deadline_s: give up polling after this long (the process is then killed anyway).

    Returns:
      `(returncode, stderr_text)`: `-signal.SIGKILL` when it was killed at the ready moment.
    """
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + deadline_s
        while time.time() < deadline and process.poll() is None:
            if ready():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(poll_s)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, process.stderr.read().decode(errors="replace")


class LogRecords(logging.Handler):
    """A logging handler that keeps the messages of the records at or above `level` (for a logger's
    warnings where pytest's function-scoped `caplog` cannot reach, e.g. in a module-scoped fixture)."""

    def __init__(self, level=logging.WARNING):
        super().__init__(level)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())
