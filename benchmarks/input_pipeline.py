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

The model is traced once. Then, in each of `--repeats` rounds, every input
gets one `model.fit` epoch of `--warmup` untimed steps (a new iterator: file
opening, filling the shuffle buffer) and `--steps` timed steps, the steady
state a long training run sees. Rounds alternate the inputs so that other load
on the machine hits them alike; each input's best round counts. ratio =
min(tfrecord, parquet) / memory steps/s; target >= 0.9. The last line is JSON.

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
from tfrec_video.data.schema import impressions_schema
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel

from synthetic import synthetic

TARGET = 0.9


class _StepTimer(tf.keras.callbacks.Callback):
    """Seconds from the end of the `warmup`-th step to the end of the epoch (steady state only)."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.start = self.seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.warmup - 1:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def steps_per_second(model, dataset, warmup, steps):
    """Steady-state steps/s of one `fit` epoch: `warmup` steps (iterator start, shuffle buffer), then `steps`."""
    timer = _StepTimer(warmup)
    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    return steps / timer.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and steps (well under 2 minutes)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    args.rows = args.rows or (40_000 if args.quick else 200_000)
    args.steps = args.steps or (10 if args.quick else 40)
    args.repeats = args.repeats or 3

    catalog, impressions, videos = synthetic(args.videos, args.rows)
    imp_schema = impressions_schema(20)
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
    # Rounds alternate the inputs, so a burst of other load on the machine hits all of them alike.
    inputs = {name: dataset.repeat() for name, dataset in inputs.items()}
    model.fit(inputs["memory"], steps_per_epoch=args.warmup, epochs=1, verbose=0)  # tracing
    rounds = {name: [] for name in inputs}
    for _ in range(args.repeats):
        for name, dataset in inputs.items():
            rounds[name].append(steps_per_second(model, dataset, args.warmup, args.steps))
    results = {}
    for name, measured in rounds.items():
        results[name] = round(max(measured), 3)
        print(json.dumps({"input": name, "steps_per_s": results[name], "rounds": [round(x, 3) for x in measured],
                          "examples_per_s": round(results[name] * args.batch_size)}), flush=True)
    ratio = min(results["tfrecord"], results["parquet"]) / results["memory"]
    print(json.dumps({"benchmark": "input_pipeline", "ratio": round(ratio, 3), "target": TARGET, "direction": ">=",
                      "steps_per_s": results, "batch_size": args.batch_size, "rows": args.rows,
                      "machine": platform.machine(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
