"""Training steps/s of the real model fed from TFRecord and Parquet files, against in-memory tensors.

Method. A seeded synthetic catalog and impressions in the package's format
(titles, categories, durations, 64-d image and 32-d audio embeddings, 20-long
histories) are written as 4 TFRecord and 4 Parquet shards, and also kept in
memory with the catalog features already joined. The same `VideoRecModel`
(default `ModelConfig`) trains on three inputs, in the same process, one after
the other:

* `memory`: `tf.data.Dataset.from_tensor_slices` of the joined arrays,
  shuffled, batched, prefetched: the input costs next to nothing, so this is
  the model's own speed;
* `tfrecord` and `parquet`: `tfrec_video.data.pipeline.impressions_dataset`
  over the files, as `fit_model` trains (shuffled files and rows, catalog
  joined in the graph, prefetched).

Each input gets `--warmup` steps (tracing), then `--steps` timed steps of
`model.fit`, repeated `--repeats` times; the best repeat counts (the least
disturbed by other load). ratio = min(tfrecord, parquet) / memory steps/s;
target >= 0.9. The last line is JSON.

    python benchmarks/input_pipeline.py [--quick]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.data import write_table
from tfrec_video.data.pipeline import impressions_dataset
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.schema import catalog_schema, impressions_schema

TARGET = 0.9
WORDS = np.array(["cat", "kitten", "football", "goal", "cooking", "recipe", "guitar", "song", "travel", "news",
                  "猫", "足球", "烹饪", "音乐", "how", "to", "best", "live"], object)


def synthetic(n_videos, n_rows, history_length=20, seed=0):
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


def steps_per_second(model, dataset, warmup, steps, repeats):
    data = dataset.repeat()
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        best = max(best, steps / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and steps (well under 2 minutes)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    args.rows = args.rows or (40_000 if args.quick else 200_000)
    args.steps = args.steps or (10 if args.quick else 40)
    args.repeats = args.repeats or (2 if args.quick else 3)

    catalog, impressions, videos = synthetic(args.videos, args.rows)
    cat_schema, imp_schema = catalog_schema(64, 32), impressions_schema(20)
    tmp = tempfile.mkdtemp(prefix="input_pipeline_")
    for fmt in ("tfrecord", "parquet"):
        os.makedirs(os.path.join(tmp, fmt))
        for shard, rows in enumerate(np.array_split(np.arange(args.rows), 4)):
            write_table({k: v[rows] for k, v in impressions.items()},
                        os.path.join(tmp, fmt, f"part-{shard}.{fmt}"), imp_schema)

    tf.keras.utils.set_random_seed(0)
    config = ModelConfig()
    model = VideoRecModel(config, adapt(catalog, impressions, title_vocabulary_size=2000), catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(config.learning_rate))
    content = [name for name in model.video_feature_names if name != "video_id"]
    joined = dict(impressions, **{name: catalog[name][videos] for name in content})
    inputs = {
        "memory": tf.data.Dataset.from_tensor_slices(joined).shuffle(20_000, seed=0)
        .batch(args.batch_size).prefetch(tf.data.AUTOTUNE),
    }
    for fmt in ("tfrecord", "parquet"):
        inputs[fmt] = impressions_dataset(os.path.join(tmp, fmt), catalog, imp_schema, args.batch_size,
                                          shuffle=True, shuffle_buffer=20_000, features=content, validate=False)
    results = {}
    for name, dataset in inputs.items():
        results[name] = round(steps_per_second(model, dataset, args.warmup, args.steps, args.repeats), 3)
        print(json.dumps({"input": name, "steps_per_s": results[name],
                          "examples_per_s": round(results[name] * args.batch_size)}), flush=True)
    ratio = min(results["tfrecord"], results["parquet"]) / results["memory"]
    print(json.dumps({"benchmark": "input_pipeline", "ratio": round(ratio, 3), "target": TARGET, "direction": ">=",
                      "steps_per_s": results, "batch_size": args.batch_size, "rows": args.rows,
                      "machine": platform.machine(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
