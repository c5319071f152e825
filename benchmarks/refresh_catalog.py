"""Time of `tfrec-video refresh-catalog` (1,000 new videos) against a full export of the same catalog.

Method, per catalog size N (100k and 1M; `--quick`: 20k only):

1. `serving_latency.py`'s seeded synthetic catalog of N videos (titles of a few
   words, categories, durations, small image and audio embeddings) and a few
   thousand impressions; a small `VideoRecModel` (embedding_dim 64,
   `history_content=True`: the model's `CatalogTable` holds the catalog)
   trained for a few steps. Quality is irrelevant, only the work is timed.
2. `export_saved_model(model, catalog)`: version 1, the export `tfrec-video
   train` writes (it shares the model's table). Timed as `export_s`; it also
   warms the process up, so the export timed next is not charged for that.
3. The new catalog: the N videos plus 1,000 new ones (new ids, new content),
   `--changed` of the old ones retitled and `--removed` dropped (0 and 0 by
   default: the issue's case).
4. `full_export_s`: `export_saved_model(model, new)`, what `tfrec-video export
   --catalog NEW` does once the model is loaded: every video encoded, the
   model's table embedded for the watched-video lookup, the SavedModel and its
   warmup records written. The model's loading is not counted (it favours the
   export).
5. `refresh_s`: `refresh_catalog(model_dir, new)`, from version 1 alone,
   everything counted: checking the catalog, loading the SavedModel (its
   variables restored), finding the added, changed and kept videos, encoding
   the added and changed ones, and writing version 2 with its warmup records.
   Its parts are reported too (`refresh_parts_s`: load, diff, encode, write).

ratio = refresh_s / full_export_s at the largest size run (1M by default); target <= 0.2
(issue 19: a refresh of 1,000 new videos in a 1M catalog takes at most 1/5 of a full export).

    python benchmarks/refresh_catalog.py [--quick] [--sizes 100000 1000000]

The last line printed is JSON.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (WordPiece ops, needed to load the export)

from serving_latency import add_synthetic_model_arguments, synthetic_catalog, synthetic_model
from tfrec_video.serving import refresh as refresh_lib
from tfrec_video.serving.export import export_saved_model

TARGET = 0.2


def _timed(parts, name, function):
    """`function`, adding the seconds of each call to `parts[name]` (the refresh's breakdown)."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def new_catalog(catalog, added, changed, removed, args, rng):
    """`catalog` with `removed` videos dropped, `changed` retitled and `added` new ones appended."""
    n = len(catalog["video_id"])
    keep = np.ones(n, bool)
    keep[rng.choice(n, removed, replace=False)] = False
    new = {name: np.asarray(values)[keep].copy() for name, values in catalog.items()}
    retitled = rng.choice(len(new["title"]), changed, replace=False)
    new["title"][retitled] = [f"{title} remastered" for title in new["title"][retitled]]
    fresh = synthetic_catalog(added, args.image_dim, args.audio_dim, args.categories, rng)
    fresh["video_id"] = np.array([f"new{i}" for i in range(added)], object)
    return {name: np.concatenate([new[name], fresh[name]]) for name in new}


def bench_size(n, args, rng):
    catalog, _, model = synthetic_model(n, args, rng)
    new = new_catalog(catalog, args.added, args.changed, args.removed, args, rng)
    root = tempfile.mkdtemp(prefix="refresh_catalog_")
    try:
        start = time.perf_counter()
        export_saved_model(model, catalog, root, name="video_rec", k=args.k, n=args.n)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        export_saved_model(model, new, os.path.join(root, "full"), name="video_rec", k=args.k, n=args.n)
        full_export_s = time.perf_counter() - start
        shutil.rmtree(os.path.join(root, "full"))
        del model
        parts = {}
        originals = {name: getattr(refresh_lib, name) for name in ("_load", "catalog_diff", "_encode", "_write")}
        try:
            for name, function in originals.items():
                setattr(refresh_lib, name, _timed(parts, name.strip("_"), function))
            start = time.perf_counter()
            version_dir = refresh_lib.refresh_catalog(os.path.join(root, "video_rec"), new)
            refresh_s = time.perf_counter() - start
        finally:
            for name, function in originals.items():
                setattr(refresh_lib, name, function)
        with open(os.path.join(version_dir, refresh_lib.REFRESH_FILE), encoding="utf-8") as f:
            counts = json.load(f)
        print(f"# catalog {n}: export {export_s:.1f}s, full export of the new catalog {full_export_s:.1f}s, "
              f"refresh {refresh_s:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in parts.items())}); {counts}",
              flush=True)
        return {"export_s": round(export_s, 2), "full_export_s": round(full_export_s, 2),
                "refresh_s": round(refresh_s, 2), "refresh_parts_s": {k: round(v, 2) for k, v in parts.items()},
                "ratio": round(refresh_s / full_export_s, 4), "counts": counts}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20k catalog only (about a minute)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="catalog sizes (default 100k 1M)")
    parser.add_argument("--added", type=int, default=1000, help="new videos in the refreshed catalog")
    parser.add_argument("--changed", type=int, default=0, help="old videos retitled in the refreshed catalog")
    parser.add_argument("--removed", type=int, default=0, help="old videos dropped from the refreshed catalog")
    add_synthetic_model_arguments(parser)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000])

    start, load_start = time.perf_counter(), os.getloadavg()
    rng = np.random.default_rng(args.seed)
    results = {n: bench_size(n, args, rng) for n in sizes}
    print(f"{'catalog':>9} {'export s':>9} {'full export s':>14} {'refresh s':>10} {'refresh/full':>12}")
    for n, r in results.items():
        print(f"{n:>9} {r['export_s']:>9.1f} {r['full_export_s']:>14.1f} {r['refresh_s']:>10.1f} {r['ratio']:>12.3f}")
    largest = max(sizes)
    ratio = results[largest]["ratio"]
    print(json.dumps({
        "ratio": ratio, "target": TARGET, "direction": "<=", "met": ratio <= TARGET, "catalog": largest,
        "added": args.added, "changed": args.changed, "removed": args.removed, "quick": args.quick, "sizes": sizes,
        "results": {str(n): r for n, r in results.items()}, "k": args.k, "n": args.n,
        "embedding_dim": args.embedding_dim, "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        # 1-minute load average at the start and the end: how busy the machine was (2 cores here).
        "load_average": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
    }))


if __name__ == "__main__":
    main()
