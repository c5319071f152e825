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

The model is traced once. Then come `--repeats` (at least 5) paired rounds:
in each, every input gets one `model.fit` epoch, back to back, of `--warmup`
untimed steps (a new iterator: file opening, filling the shuffle buffer) and
`--steps` timed steps, the steady state a long training run sees. The order
rotates (round r starts with input r mod 3), so a burst of other load on the
machine hits all inputs alike. Each round gives a ratio_r =
min(tfrecord_r, parquet_r) / memory_r steps/s; the verdict is the median of
the round ratios, target >= 0.9, printed with their spread (min, max,
interquartile range) and the load average at start and end. Each input's
steps/s is its median round. The last line is JSON.

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
MIN_REPEATS = 5


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


def paired_verdict(rounds):
    """Median and spread of the per-round ratios min(tfrecord, parquet) / memory.

    `rounds` is a list of {input: steps/s} dicts, one per round, each input timed in that round. A ratio
    within one round compares inputs under the same load, and the median over rounds ignores a few bad ones.
    Returns {"ratio": median, "round_ratios": [...], "spread": {"min", "max", "iqr"}} (iqr: numpy's linear
    75th minus 25th percentile).
    """
    ratios = [min(r["tfrecord"], r["parquet"]) / r["memory"] for r in rounds]
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"ratio": float(np.median(ratios)), "round_ratios": ratios,
            "spread": {"min": min(ratios), "max": max(ratios), "iqr": float(q75 - q25)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and steps (about 3 minutes on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"paired rounds, at least {MIN_REPEATS} (the verdict is their median)")
    args = parser.parse_args()
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS} (the verdict is a median of paired rounds)")
    args.rows = args.rows or (40_000 if args.quick else 200_000)
    args.steps = args.steps or (8 if args.quick else 40)
    load_start = os.getloadavg()

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
    inputs = {name: dataset.repeat() for name, dataset in inputs.items()}
    model.fit(inputs["memory"], steps_per_epoch=args.warmup, epochs=1, verbose=0)  # tracing
    # Paired rounds: every input once per round, back to back, the order rotating so that a burst of
    # other load on the machine hits all of them alike.
    names = list(inputs)
    rounds = []
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        rounds.append({name: steps_per_second(model, inputs[name], args.warmup, args.steps) for name in order})
    results = {}
    for name in names:
        measured = [r[name] for r in rounds]
        results[name] = round(float(np.median(measured)), 3)
        print(json.dumps({"input": name, "steps_per_s": results[name], "rounds": [round(x, 3) for x in measured],
                          "examples_per_s": round(results[name] * args.batch_size)}), flush=True)
    verdict = paired_verdict(rounds)
    spread = {k: round(v, 3) for k, v in verdict["spread"].items()}
    round_ratios = [round(x, 3) for x in verdict["round_ratios"]]
    print(f"round ratios {round_ratios}; median {verdict['ratio']:.3f}, "
          f"min {spread['min']}, max {spread['max']}, iqr {spread['iqr']}", flush=True)
    load_end = os.getloadavg()
    print(json.dumps({"benchmark": "input_pipeline", "ratio": round(verdict["ratio"], 3), "target": TARGET,
                      "direction": ">=", "round_ratios": round_ratios, "spread": spread,
                      "steps_per_s": results, "batch_size": args.batch_size, "rows": args.rows,
                      "repeats": args.repeats, "machine": platform.machine(), "cpus": os.cpu_count(),
                      "load_average": {"start": [round(x, 2) for x in load_start],
                                       "end": [round(x, 2) for x in load_end]}}))


if __name__ == "__main__":
    main()
