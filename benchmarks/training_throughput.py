"""Training throughput (examples/s) per device and precision: CPU float32, and GPU float32 / mixed precision.

Method. A seeded synthetic catalog and impressions in the package's format
(multilingual titles, categories, durations, 256-d image and 128-d audio
embeddings, 20-long histories) are held in memory, joined, and fed to
`model.fit` from `tf.data.Dataset.from_tensor_slices` (so the input pipeline is
not what is measured; `input_pipeline.py` measures that). The model is
`VideoRecModel` with the default `ModelConfig` (or `--small`). Each setting runs
in its own Python process (a dtype policy and the visible devices are fixed
per process): build, compile, one warm-up epoch of `--warmup` steps (tracing),
then `--steps` timed steps; examples/s = steps x batch / seconds.

Settings:

* `cpu-float32`: `CUDA_VISIBLE_DEVICES=""`, float32;
* `cpu-mixed_bfloat16`: the same under `mixed_bfloat16` (for reference; on
  most CPUs slower than float32);
* `gpu-float32`, `gpu-mixed_float16`: on GPU 0, when there is one
  (`TrainingConfig.mixed_precision=True` is `mixed_float16`).

The last line is JSON: `ratio` = examples/s of the best GPU setting / examples/s
of `cpu-float32` with target >= 1 (a GPU should be faster); `ratio` is null
when no GPU is visible.

    python benchmarks/training_throughput.py [--quick] [--batch-size 1024] [--steps 30]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n_videos, n_rows, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(["cat", "kitten", "football", "goal", "cooking", "recipe", "guitar", "song", "travel", "news",
                      "猫", "足球", "烹饪", "音乐", "how", "to", "best", "live"], object)
    topic = rng.integers(0, 8, n_videos)
    catalog = {
        "video_id": np.array([f"v{i}" for i in range(n_videos)], object),
        "title": np.array([" ".join(rng.choice(words, 5)) for _ in range(n_videos)], object),
        "category": np.array([f"c{t}" for t in topic], object),
        "duration_s": rng.uniform(10, 3600, n_videos).astype(np.float32),
        "image_embedding": rng.normal(size=(n_videos, 256)).astype(np.float32),
        "audio_embedding": rng.normal(size=(n_videos, 128)).astype(np.float32),
    }
    videos = rng.integers(0, n_videos, n_rows)
    impressions = {
        "user_id": np.array([f"u{u}" for u in rng.integers(0, n_rows // 20, n_rows)], object),
        "history": catalog["video_id"][rng.integers(0, n_videos, (n_rows, 20))],
        "hour": rng.integers(0, 24, n_rows).astype(np.int64),
        "device": rng.choice(np.array(["phone", "tv", "desktop"], object), n_rows),
        "video_id": catalog["video_id"][videos],
        "clicked": (rng.random(n_rows) < 0.1).astype(np.int64),
    }
    for name, values in catalog.items():
        if name != "video_id":
            impressions[name] = values[videos]
    return catalog, impressions


def run_setting(args) -> dict:
    """One setting, in this process: examples/s of `model.fit` steps."""
    import tfrec_video  # noqa: F401  (before TensorFlow)
    import tensorflow as tf

    from tfrec_video.features import adapt
    from tfrec_video.models import ModelConfig, VideoRecModel
    from tfrec_video.models.video_rec import dtype_policy

    device, precision = args.worker.split("-", 1)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        return {"setting": args.worker, "skipped": "no GPU visible"}
    catalog, impressions = _data(args.videos, args.rows)
    config = ModelConfig(embedding_dim=32, title_vocabulary_size=2000) if args.small else ModelConfig()
    vocabularies = adapt(catalog, impressions, title_vocabulary_size=config.title_vocabulary_size)
    tf.keras.utils.set_random_seed(0)
    data = tf.data.Dataset.from_tensor_slices(impressions).shuffle(args.rows, seed=0).repeat()
    data = data.batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    with dtype_policy(None if precision == "float32" else precision):
        model = VideoRecModel(config, vocabularies, catalog=catalog)
        model.compile(tf.keras.optimizers.Adam(config.learning_rate))
        model.fit(data, steps_per_epoch=args.warmup, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
    return {"setting": args.worker, "device": gpus[0].name if device == "gpu" else "CPU",
            "examples_per_s": round(args.steps * args.batch_size / seconds, 1),
            "ms_per_step": round(1000 * seconds / args.steps, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rows (under 2 minutes on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--small", action="store_true", help="a small ModelConfig instead of the default")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (8 if args.quick else 40)
    args.rows = args.rows or (20_000 if args.quick else 100_000)
    if args.worker:
        print(json.dumps(run_setting(args)))
        return
    results = []
    for setting in ("cpu-float32", "cpu-mixed_bfloat16", "gpu-float32", "gpu-mixed_float16"):
        if args.quick and setting == "cpu-mixed_bfloat16":
            continue
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
        if setting.startswith("cpu"):
            env["CUDA_VISIBLE_DEVICES"] = ""
        command = [sys.executable, __file__, "--worker", setting, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--videos", str(args.videos),
                   "--rows", str(args.rows)] + (["--small"] if args.small else [])
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            results.append({"setting": setting, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    cpu = next(r["examples_per_s"] for r in results if r["setting"] == "cpu-float32" and "examples_per_s" in r)
    gpu = [r["examples_per_s"] for r in results if r["setting"].startswith("gpu") and "examples_per_s" in r]
    print(json.dumps({"benchmark": "training_throughput", "ratio": round(max(gpu) / cpu, 2) if gpu else None,
                      "target": 1.0, "direction": ">=", "cpu_float32_examples_per_s": cpu,
                      "settings": results, "batch_size": args.batch_size, "machine": platform.processor() or
                      platform.machine(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
