"""Wall time and peak RSS of generate -> train one epoch -> export, at 1M videos and 10M impressions.

Method.

1. Generate (in a child process, `--generate-only`; its own peak RSS is reported
   apart as `generate_peak_rss_gb`). A seeded catalog of `--videos` videos in the
   package's format: `video_id`, a multilingual title of 3 to 8 words from a
   60-word list, one of 40 `category` values, `duration_s`, a 64-d
   `image_embedding` (its category's centre plus noise, so PCA has structure) and
   a 32-d `audio_embedding`, float32, written as TFRecord shards of 250k rows.
   Then `--impressions` impressions (`user_id` of impressions/20 users, a full
   20-long `history`, `hour`, `device`, `video_id`, `clicked` about 10%) written
   as TFRecord shards of `--shard-rows` (500k) rows, one chunk in memory at a
   time. Shown and watched videos follow a Zipf law (exponent 0.9, ranks shuffled
   over the ids), so about 898k videos of a 1M catalog are shown in 10M
   impressions (307k in 1M) and own an embedding row. With `--workdir`, the data is kept and
   a later run with the same sizes and seed reuses it (`generate_s` is then null;
   the export is removed unless `--keep`).
2. Train, in this process, as a user would: `load_catalog`, then `fit_model(catalog,
   train_dir, impressions_schema(20), ModelConfig(), TrainingConfig(epochs=1,
   batch_size=--batch-size))`, one epoch over every impression. `fit_model`'s
   steps are timed apart by thin wrappers around the functions it calls (restored
   after; the code path is the package's): `validate` (`read_table`'s checking
   pass over all files), `adapt` (vocabularies, WordPiece, PCA: a second pass),
   `build` (`VideoRecModel` with its `CatalogTable`, compile, the input pipeline
   with `join_catalog`), `fit` (Keras `on_train_begin` to `on_train_end`, tracing
   included; `first_step_s`, steady examples/s and the RSS at every tenth of the
   epoch are reported too) and `fit_return` (from `on_train_end` until
   `fit_model` has returned).
3. Export: `export_saved_model(model, catalog, <workdir>/saved_models)`, timed as
   `export_module` (`ServingModule`: it serves from the model's `CatalogTable`,
   which holds this catalog, and computes the encodings and embeddings of the
   whole catalog), `export_save` (`tf.saved_model.save`) and
   `export_warmup` (the TF Serving warmup requests).

Memory. After each phase the script reads `VmRSS` and `VmHWM` from
/proc/self/status and then resets the high-water mark (`echo 5 >
/proc/self/clear_refs`), so `peak_rss_gb_during` is each phase's own peak and
`peak_rss_gb` (the largest of them) the process's peak. (The reset also resets
`ru_maxrss`, so the peak is not read from `getrusage`; where the reset is refused,
`hwm_reset` is false and every phase's figure is the peak so far.) GB = 10^9 bytes.

ratio = peak RSS of the train + export process in GB / 8; target 1.0, direction
"<=" (peak RSS <= 8 GB). The generator's peak is not in the ratio: it stands for
data a user already has. `wall_s` is the whole run, generation included.

    python benchmarks/scale.py [--quick] [--videos 1000000] [--impressions 10000000]
                               [--batch-size 4096] [--workdir DIR] [--keep]

`--quick` is 20k videos and 100k impressions (about a minute on 2 idle cores). Each
phase prints one JSON line as it ends; the last line is the summary, JSON.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET_GB = 8.0
GB = 1e9
IMAGE_DIM, AUDIO_DIM, HISTORY_LENGTH = 64, 32, 20
CATEGORIES = 40
ZIPF_EXPONENT = 0.9
CATALOG_SHARD_ROWS = 250_000
WORDS = np.array([
    "cat", "kitten", "dog", "puppy", "football", "goal", "match", "cooking", "recipe", "pasta", "guitar", "piano",
    "song", "travel", "beach", "mountain", "news", "review", "game", "speedrun", "funny", "best", "how", "to",
    "make", "top", "ten", "live", "unboxing", "tutorial", "highlights", "remix",
    "gato", "perro", "fútbol", "receta", "viaje", "canción", "noticias", "mejor",
    "chat", "chien", "cuisine", "musique", "Katze", "Hund", "Reise",
    "猫", "足球", "烹饪", "音乐", "旅行", "新闻", "猫の動画", "料理", "サッカー",
    "बिल्ली", "खाना", "गाना", "यात्रा",
], object)
DEVICES = np.array(["phone", "tv", "desktop", "tablet"], object)
DEVICE_P = np.array([0.55, 0.2, 0.2, 0.05])


# --------------------------------------------------------------------------
# Memory and phases.
# --------------------------------------------------------------------------


def proc_status():
    """`{"VmRSS": bytes, "VmHWM": bytes}` of this process."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_hwm() -> bool:
    """Resets VmHWM (and ru_maxrss) to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Phases:
    """Seconds, RSS after, and peak RSS during each phase; a phase ends where the next begins."""

    def __init__(self):
        self.seconds, self.rss_after, self.peak_during = {}, {}, {}
        self.hwm_reset = reset_hwm()
        self._start = time.perf_counter()

    def mark(self, name, quiet=False):
        now = time.perf_counter()
        status = proc_status()
        self.seconds[name] = round(now - self._start, 2)
        self.rss_after[name] = round(status["VmRSS"] / GB, 3)
        self.peak_during[name] = round(status["VmHWM"] / GB, 3)
        self.hwm_reset = reset_hwm() and self.hwm_reset
        self._start = time.perf_counter()
        if not quiet:
            print(json.dumps({"phase": name, "s": self.seconds[name], "rss_gb_after": self.rss_after[name],
                              "peak_rss_gb_during": self.peak_during[name]}), flush=True)

    @property
    def peak(self):
        name = max(self.peak_during, key=self.peak_during.get)
        return self.peak_during[name], name


class patched:
    """Temporarily replaces `module.name` with `wrap(original)`."""

    def __init__(self, module, name, wrap):
        self.module, self.name, self.wrap = module, name, wrap

    def __enter__(self):
        self.original = getattr(self.module, self.name)
        setattr(self.module, self.name, self.wrap(self.original))

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.original)


def ending(phases, phase):
    """A wrapper of a function whose return ends `phase`."""
    def wrap(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            phases.mark(phase)
            return out
        return wrapped
    return wrap


def starting(phases, phase):
    """A wrapper of a function whose call ends `phase` (the time up to it)."""
    def wrap(fn):
        def wrapped(*args, **kwargs):
            phases.mark(phase)
            return fn(*args, **kwargs)
        return wrapped
    return wrap


# --------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------


def zipf_sampler(n, rng):
    """A function drawing video indices (any shape) from a Zipf law over `n` videos, ranks shuffled."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT)
    cdf /= cdf[-1]
    video_of_rank = rng.permutation(n)

    def draw(rng, shape):
        ranks = np.minimum(np.searchsorted(cdf, rng.random(shape)), n - 1)
        return video_of_rank[ranks]

    return draw


def make_catalog(n, rng):
    topic = rng.integers(0, CATEGORIES, n)
    centres = rng.normal(size=(CATEGORIES, IMAGE_DIM)).astype(np.float32)
    words = rng.integers(0, len(WORDS), (n, 8))
    lengths = rng.integers(3, 9, n)
    word_list = WORDS.tolist()
    return {
        "video_id": np.array([f"v{i}" for i in range(n)], object),
        "title": np.array([" ".join([word_list[j] for j in w[:m]]) for w, m in zip(words.tolist(), lengths)], object),
        "category": np.array([f"c{t}" for t in range(CATEGORIES)], object)[topic],
        "duration_s": rng.uniform(10, 3600, n).astype(np.float32),
        "image_embedding": (centres[topic] + 0.5 * rng.standard_normal((n, IMAGE_DIM), dtype=np.float32)),
        "audio_embedding": rng.standard_normal((n, AUDIO_DIM), dtype=np.float32),
    }


def generate(args, data_dir):
    """Writes the catalog and impressions shards under `data_dir` and a `generated.json` marker."""
    import tfrec_video  # noqa: F401  (before TensorFlow)
    from tfrec_video.data import write_table
    from tfrec_video.data.schema import catalog_schema, impressions_schema

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    catalog = make_catalog(args.videos, rng)
    cat_schema, imp_schema = catalog_schema(IMAGE_DIM, AUDIO_DIM), impressions_schema(HISTORY_LENGTH)
    for shard, lo in enumerate(range(0, args.videos, CATALOG_SHARD_ROWS)):
        write_table({k: v[lo:lo + CATALOG_SHARD_ROWS] for k, v in catalog.items()},
                    os.path.join(data_dir, "catalog", f"part-{shard:05d}.tfrecord"), cat_schema)
    catalog_s = time.perf_counter() - start
    ids = catalog["video_id"]
    del catalog
    draw = zipf_sampler(args.videos, rng)
    users = max(1, args.impressions // 20)
    user_ids = np.array([f"u{i}" for i in range(users)], object)
    shards = math.ceil(args.impressions / args.shard_rows)
    for shard in range(shards):
        n = min(args.shard_rows, args.impressions - shard * args.shard_rows)
        r = np.random.default_rng([args.seed, shard])
        write_table({
            "user_id": user_ids[r.integers(0, users, n)],
            "history": ids[draw(r, (n, HISTORY_LENGTH))],
            "hour": r.integers(0, 24, n).astype(np.int64),
            "device": DEVICES[r.choice(len(DEVICES), n, p=DEVICE_P)],
            "video_id": ids[draw(r, n)],
            "clicked": (r.random(n) < 0.1).astype(np.int64),
        }, os.path.join(data_dir, "train", f"part-{shard:05d}.tfrecord"), imp_schema)
    info = {"videos": args.videos, "impressions": args.impressions, "seed": args.seed, "shard_rows": args.shard_rows,
            "users": users, "catalog_shards": math.ceil(args.videos / CATALOG_SHARD_ROWS), "train_shards": shards,
            "generate_s": round(time.perf_counter() - start, 2), "catalog_s": round(catalog_s, 2),
            "generate_peak_rss_gb": round(proc_status()["VmHWM"] / GB, 3),
            "data_mb": round(dir_bytes(data_dir) / 1e6, 1)}
    with open(os.path.join(data_dir, "generated.json"), "w") as f:
        json.dump(info, f)
    return info


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, name)) for d, _, names in os.walk(path) for name in names)


def ensure_data(args, data_dir):
    """The generator's report: read back when `data_dir` already holds these sizes, else from a child run."""
    marker = os.path.join(data_dir, "generated.json")
    if os.path.exists(marker):
        with open(marker) as f:
            info = json.load(f)
        if all(info.get(k) == getattr(args, k) for k in ("videos", "impressions", "seed", "shard_rows")):
            info["reused"] = True
            return info
        shutil.rmtree(data_dir)  # ours (it has the marker), generated with other sizes
    elif os.path.exists(data_dir):
        raise SystemExit(f"{data_dir} exists but holds no finished generation ({marker} is missing): "
                         "an interrupted run or someone else's data. Remove it or choose another --workdir.")
    command = [sys.executable, os.path.abspath(__file__), "--generate-only", "--workdir", os.path.dirname(data_dir),
               "--videos", str(args.videos), "--impressions", str(args.impressions), "--seed", str(args.seed),
               "--shard-rows", str(args.shard_rows)]
    subprocess.run(command, check=True)
    with open(marker) as f:
        info = json.load(f)
    info["reused"] = False
    return info


# --------------------------------------------------------------------------
# Train and export.
# --------------------------------------------------------------------------


def train_and_export(args, data_dir, export_dir, phases):
    import tensorflow as tf

    from tfrec_video import training
    from tfrec_video.data.pipeline import load_catalog
    from tfrec_video.data.schema import catalog_schema, impressions_schema
    from tfrec_video.models import ModelConfig
    from tfrec_video.serving import export as export_module

    phases.mark("startup")
    catalog = load_catalog(os.path.join(data_dir, "catalog"), catalog_schema(IMAGE_DIM, AUDIO_DIM))
    phases.mark("load_catalog")

    steps = math.ceil(args.impressions / args.batch_size)
    checkpoints = sorted({max(0, math.ceil(steps * q / 10) - 1) for q in range(1, 11)})
    fit = {"steps": steps, "rss_gb_at_step": {}}

    class Probe(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            phases.mark("build")
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if batch == 0:
                fit["first_step_s"] = round(now - self.begin, 2)
                self.after_first = now
            if batch in checkpoints:
                fit["rss_gb_at_step"][batch + 1] = round(proc_status()["VmRSS"] / GB, 3)
            self.last, self.batches = now, batch + 1

        def on_train_end(self, logs=None):
            if self.batches > 1:
                fit["steady_examples_per_s"] = round((self.batches - 1) * args.batch_size
                                                     / (self.last - self.after_first))
            phases.mark("fit")

    model_config = ModelConfig(history_content=not args.no_history_content)
    training_config = training.TrainingConfig(epochs=1, batch_size=args.batch_size, seed=args.seed)
    with patched(training, "read_table", ending(phases, "validate")), \
            patched(training, "adapt", ending(phases, "adapt")):
        model, history = training.fit_model(catalog, os.path.join(data_dir, "train"),
                                            impressions_schema(HISTORY_LENGTH), model_config, training_config,
                                            callbacks=[Probe()], verbose=0)
    fit["loss"] = round(float(history.history["loss"][-1]), 4)
    fit["seen_videos"] = len(model.vocabularies.video_ids)
    fit["users"] = len(model.vocabularies.user_ids)
    phases.mark("fit_return")  # from Keras's on_train_end to here: fit and fit_model returning, iterators freed

    with patched(export_module, "ServingModule", ending(phases, "export_module")), \
            patched(export_module, "warmup_requests", starting(phases, "export_save")):
        version_dir = export_module.export_saved_model(model, catalog, base_dir=export_dir)
    phases.mark("export_warmup")
    return fit, version_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k videos, 100k impressions (about a minute)")
    parser.add_argument("--videos", type=int, default=None, help="catalog size (default 1,000,000)")
    parser.add_argument("--impressions", type=int, default=None, help="training impressions (default 10,000,000)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shard-rows", type=int, default=500_000, help="impressions per TFRecord file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-history-content", action="store_true",
                        help="ModelConfig(history_content=False): no catalog copy in the model's CatalogTable")
    parser.add_argument("--workdir", default=None,
                        help="keep the generated data here (reused by later runs of the same sizes and seed); "
                             "default a temporary directory, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and the export")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.videos = args.videos or (20_000 if args.quick else 1_000_000)
    args.impressions = args.impressions or (100_000 if args.quick else 10_000_000)

    if args.generate_only:
        info = generate(args, os.path.join(args.workdir, "data"))
        print(json.dumps(dict(info, phase="generate")), flush=True)
        return

    start = time.perf_counter()
    work = args.workdir or tempfile.mkdtemp(prefix="scale_")
    os.makedirs(work, exist_ok=True)
    data_dir, export_dir = os.path.join(work, "data"), os.path.join(work, "saved_models")
    try:
        generated = ensure_data(args, data_dir)
        import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)

        phases = Phases()
        fit, version_dir = train_and_export(args, data_dir, export_dir, phases)
        export_mb = round(dir_bytes(version_dir) / 1e6, 1)
        if args.workdir and not args.keep:
            shutil.rmtree(version_dir)  # the data stays for the next run; the export does not
            try:
                os.removedirs(os.path.dirname(version_dir))  # saved_models/video_rec, when left empty
            except OSError:
                pass
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - start

    s = phases.seconds
    train_s = sum(s[p] for p in ("startup", "load_catalog", "validate", "adapt", "build", "fit", "fit_return"))
    export_s = sum(s[p] for p in ("export_module", "export_save", "export_warmup"))
    peak, peak_phase = phases.peak
    print(json.dumps({
        "benchmark": "scale", "ratio": round(peak / TARGET_GB, 3), "target": 1.0, "direction": "<=",
        "peak_rss_gb": peak, "peak_phase": peak_phase, "target_gb": TARGET_GB,
        "wall_s": round(wall, 1), "train_export_s": round(train_s + export_s, 1),
        "phases": dict({"generate_s": None if generated["reused"] else generated["generate_s"],
                        "train_s": round(train_s, 1), "export_s": round(export_s, 1)},
                       **{f"{p}_s": v for p, v in s.items()}),
        "rss_gb_after": phases.rss_after, "peak_rss_gb_during": phases.peak_during, "hwm_reset": phases.hwm_reset,
        "generate_peak_rss_gb": generated["generate_peak_rss_gb"], "data_reused": generated["reused"],
        "fit": fit, "export_mb": export_mb, "data_mb": generated["data_mb"],
        "videos": args.videos, "impressions": args.impressions, "users": generated["users"],
        "batch_size": args.batch_size, "history_content": not args.no_history_content,
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
