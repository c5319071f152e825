"""The seeded synthetic catalog and impressions that `input_pipeline.py` and `training_step.py` train on.

The package's format: multilingual titles, categories, durations, 64-d image
and 32-d audio embeddings, 20-long watch histories, about 10 % clicks. Run as
`python benchmarks/<script>.py`, a script imports this as `synthetic` (its
own directory is first on `sys.path`).
"""

import numpy as np

WORDS = np.array(["cat", "kitten", "football", "goal", "cooking", "recipe", "guitar", "song", "travel", "news",
                  "猫", "足球", "烹饪", "音乐", "how", "to", "best", "live"], object)


def synthetic(n_videos, n_rows, history_length=20, seed=0):
    """`(catalog, impressions, videos)`: column dicts, and each impression's catalog row."""
    rng = np.random.default_rng(seed)
    catalog = {
        "video_id": np.array([f"v{i}" for i in range(n_videos)], object),
        "title": np.array([" ".join(rng.choice(WORDS, 5)) for _ in range(n_videos)], object),
        "category": np.array([f"c{t}" for t in rng.integers(0, 12, n_videos)], object),
        "duration_s": rng.uniform(10, 3600, n_videos).astype(np.float32),
        "image_embedding": rng.normal(size=(n_videos, 64)).astype(np.float32),
        "audio_embedding": rng.normal(size=(n_videos, 32)).astype(np.float32),
    }
    videos = rng.integers(0, n_videos, n_rows)
    impressions = {
        "user_id": np.array([f"u{u}" for u in rng.integers(0, max(1, n_rows // 20), n_rows)], object),
        "history": catalog["video_id"][rng.integers(0, n_videos, (n_rows, history_length))],
        "hour": rng.integers(0, 24, n_rows).astype(np.int64),
        "device": rng.choice(np.array(["phone", "tv", "desktop"], object), n_rows),
        "video_id": catalog["video_id"][videos],
        "clicked": (rng.random(n_rows) < 0.1).astype(np.int64),
    }
    return catalog, impressions, videos
