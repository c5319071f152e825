"""Latency of the exported `recommend` signature against a bare matmul + top_k floor.

Method, per catalog size N (10k, 100k, 1M; `--quick`: 100k only):

1. A synthetic, seeded catalog of N videos in the package's catalog format
   (`video_id`, a title of a few words drawn from a small vocabulary, `category`,
   `duration_s`, `image_embedding`, `audio_embedding`; float32, small media dims,
   see the flags) and a few thousand impressions on it to `adapt` and train on.
2. A `VideoRecModel` with a small `ModelConfig` (embedding_dim 64 by default),
   trained for a few steps only: quality is irrelevant, only the graph's cost is
   measured. `history_content=True` (the default) puts the catalog's content in
   the model's `CatalogTable` too; `--no-history-content` leaves it out.
3. `ServingModule(model, catalog, k, n)` (brute-force retrieval of the top k over
   the whole catalog, then the ranking head on those k, re-sorted, top n) is saved
   with `tf.saved_model.save` and loaded back (after `import tensorflow_text`), and
   its `serving_default` signature -- what TF Serving runs -- is timed.
4. The floor: the same query embeddings (`embed_query` of the loaded model for the
   same requests) against the same catalog embedding matrix (the export's
   `catalog_embedding`) through a `tf.function` of `top_k(matmul(q, M, transpose_b=True), k)`.

Both are called with pre-built tensors, warmed up, then timed R times each with
`time.perf_counter` at batch 1 and batch 64, cycling through distinct request
batches; p50 and p99 are reported in ms. The `retrieve` (query tower + brute force)
and `embed_query` signatures are timed the same way, so the table shows where
`recommend`'s time goes: recommend - retrieve is the ranking of the k candidates,
retrieve - floor the query tower plus the seen-video mask.

ratio = p50(recommend, batch 1, 100k) / p50(floor, batch 1, 100k) and ratio_batch_64, the same at
batch 64; target <= 1.5 for both.

    python benchmarks/serving_latency.py [--quick] [--sizes 10000 100000 1000000]

The last line printed is JSON.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (WordPiece ops, needed to load the export)

from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.serving.export import ServingModule

WORDS = np.array(["cat", "kitten", "dog", "puppy", "football", "goal", "match", "cooking", "recipe", "pasta",
                  "guitar", "piano", "song", "travel", "beach", "mountain", "news", "review", "game", "speedrun",
                  "funny", "best", "how", "to", "make", "top", "ten", "live", "猫", "足球", "烹饪", "音乐"], object)
TARGET_SIZE, TARGET_BATCHES, TARGET = 100_000, (1, 64), 1.5


def synthetic_catalog(n, image_dim, audio_dim, categories, rng):
    """N videos as column arrays (float32 media), topic-correlated so PCA and titles are non-trivial."""
    topic = rng.integers(0, categories, n)
    centres = rng.normal(size=(categories, image_dim)).astype(np.float32)
    image = centres[topic] + 0.5 * rng.standard_normal((n, image_dim), dtype=np.float32)
    words = rng.integers(0, len(WORDS), (n, 4))
    lengths = rng.integers(2, 5, n)
    return {
        "video_id": np.array([f"v{i}" for i in range(n)], object),
        "title": np.array([" ".join(WORDS[w[:m]]) for w, m in zip(words, lengths)], object),
        "category": np.array([f"c{t}" for t in range(categories)], object)[topic],
        "duration_s": rng.uniform(10, 1200, n).astype(np.float32),
        "image_embedding": image.astype(np.float32),
        "audio_embedding": rng.standard_normal((n, audio_dim), dtype=np.float32),
    }


def synthetic_impressions(catalog, rows, users, history_length, rng):
    n = len(catalog["video_id"])
    videos = rng.integers(0, n, rows)
    history = np.full((rows, history_length), "", object)
    lengths = rng.integers(0, history_length + 1, rows)
    watched = catalog["video_id"][rng.integers(0, n, (rows, history_length))]
    mask = np.arange(history_length)[None, :] < lengths[:, None]
    history[mask] = watched[mask]
    impressions = {
        "user_id": np.array([f"u{u}" for u in rng.integers(0, users, rows)], object),
        "history": history,
        "hour": rng.integers(0, 24, rows).astype(np.int64),
        "device": rng.choice(np.array(["phone", "tv", "desktop", "tablet"], object), rows),
        "video_id": catalog["video_id"][videos],
        "clicked": (rng.random(rows) < 0.2).astype(np.int64),
    }
    for name, values in catalog.items():
        if name != "video_id":
            impressions[name] = values[videos]
    return impressions


def percentiles(fn, inputs, reps, warmup):
    """p50, p99 in ms of `fn(**inputs[i % len(inputs)])`, after `warmup` untimed calls."""
    for i in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn(**inputs[i % len(inputs)]))
    times = []
    for i in range(reps):
        start = time.perf_counter()
        out = fn(**inputs[i % len(inputs)])
        tf.nest.map_structure(lambda t: t.numpy(), out)  # include the device-to-host copy, as a server would
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def add_synthetic_model_arguments(parser):
    """The flags of the synthetic catalog and model (`synthetic_model`), which `refresh_catalog.py` shares."""
    parser.add_argument("--k", type=int, default=100, help="candidates retrieved")
    parser.add_argument("--n", type=int, default=10, help="videos returned")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--image-dim", type=int, default=16)
    parser.add_argument("--audio-dim", type=int, default=16)
    parser.add_argument("--media-components", type=int, default=8)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--title-vocabulary-size", type=int, default=200)
    parser.add_argument("--impressions", type=int, default=4000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--history-length", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)


def synthetic_model(n, args, rng, history_content=True):
    """`(catalog, impressions, model)`: a synthetic catalog of `n` videos, impressions of it and a
    `VideoRecModel` trained on them for `args.train_steps` batches (the flags of `add_synthetic_model_arguments`)."""
    catalog = synthetic_catalog(n, args.image_dim, args.audio_dim, args.categories, rng)
    impressions = synthetic_impressions(catalog, args.impressions, args.users, args.history_length, rng)
    tf.keras.utils.set_random_seed(args.seed)
    components = min(args.media_components, args.image_dim, args.audio_dim)
    vocab = adapt(catalog, impressions, title_vocabulary_size=args.title_vocabulary_size, media_components=components)
    config = ModelConfig(embedding_dim=args.embedding_dim, title_vocabulary_size=args.title_vocabulary_size,
                         media_components=components, history_content=history_content, seed=args.seed)
    model = VideoRecModel(config, vocab, catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(config.learning_rate))
    model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(256).take(args.train_steps), epochs=1, verbose=0)
    return catalog, impressions, model


def bench_size(n, args, rng):
    t0 = time.perf_counter()
    catalog, impressions, model = synthetic_model(n, args, rng, history_content=args.history_content)
    t_train = time.perf_counter() - t0

    module = ServingModule(model, catalog, k=args.k, n=args.n)
    export_dir = tempfile.mkdtemp(prefix="serving_latency_")
    try:
        tf.saved_model.save(module, export_dir, signatures=module.signatures())
        t_export = time.perf_counter() - t0 - t_train
        # The same catalog embedding matrix the export's retrieval scores.
        candidates = getattr(module, "catalog_embedding", None)
        if candidates is not None and tuple(tf.shape(candidates).numpy()) == (n, args.embedding_dim):
            matrix = tf.constant(candidates.numpy())
        else:
            matrix = tf.concat([module.embed_video(**{k: tf.constant(np.asarray(catalog[k])[s:s + 4096])
                                                      for k in module.video_names})["video_embedding"]
                                for s in range(0, n, 4096)], axis=0)
        del module, model
        loaded = tf.saved_model.load(export_dir)
        recommend, retrieve = loaded.signatures["serving_default"], loaded.signatures["retrieve"]
        embed_query = loaded.signatures["embed_query"]
        query_names = [s.name for s in tf.nest.flatten(recommend.structured_input_signature)]

        @tf.function(input_signature=[tf.TensorSpec([None, args.embedding_dim], tf.float32)])
        def floor(query):
            scores, rows = tf.math.top_k(tf.matmul(query, matrix, transpose_b=True), k=min(args.k, n))
            return {"scores": scores, "rows": rows}

        results = {}
        rows_total = len(impressions["user_id"])
        for batch, reps in ((1, args.reps_1), (64, args.reps_64)):
            requests = []
            for j in range(args.distinct_requests):
                idx = (np.arange(batch) + j * batch) % rows_total
                requests.append({name: tf.constant(impressions[name][idx]) for name in query_names})
            queries = [{"query": embed_query(**r)["query_embedding"]} for r in requests]
            warm = args.warmup
            for name, fn, inputs in (("recommend", recommend, requests), ("retrieve", retrieve, requests),
                                     ("embed_query", embed_query, requests), ("floor", floor, queries)):
                results[(name, batch)] = percentiles(fn, inputs, reps, warm)
        print(f"# catalog {n}: data+adapt+train {t_train:.1f}s, ServingModule+save {t_export:.1f}s", flush=True)
        return results
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k only, fewer repetitions (under 2 minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="catalog sizes (default 10k 100k 1M)")
    add_synthetic_model_arguments(parser)
    parser.add_argument("--no-history-content", dest="history_content", action="store_false",
                        help="ModelConfig(history_content=False): no catalog content inside the model")
    parser.add_argument("--reps-1", type=int, default=None, help="timed calls at batch 1 (200; quick 100)")
    parser.add_argument("--reps-64", type=int, default=None, help="timed calls at batch 64 (50; quick 20)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--distinct-requests", type=int, default=16, help="request batches cycled through")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([TARGET_SIZE] if args.quick else [10_000, 100_000, 1_000_000])
    args.reps_1 = args.reps_1 or (100 if args.quick else 200)
    args.reps_64 = args.reps_64 or (20 if args.quick else 50)

    start, load_start = time.perf_counter(), os.getloadavg()
    rng = np.random.default_rng(args.seed)
    results = {}
    for n in sizes:
        for (name, batch), value in bench_size(n, args, rng).items():
            results[(name, n, batch)] = value

    print(f"{'signature':<12} {'catalog':>9} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'p50/floor':>9}")
    for (name, n, batch), (p50, p99) in results.items():
        rel = p50 / results[("floor", n, batch)][0]
        print(f"{name:<12} {n:>9} {batch:>5} {p50:>9.3f} {p99:>9.3f} {rel:>9.2f}")
    key = lambda name, n, b: f"{name}/{n}/b{b}"  # noqa: E731
    p50s = {key(*k): round(v[0], 4) for k, v in results.items()}
    p99s = {key(*k): round(v[1], 4) for k, v in results.items()}
    ratios = {batch: round(results[("recommend", TARGET_SIZE, batch)][0] / results[("floor", TARGET_SIZE, batch)][0], 3)
              for batch in TARGET_BATCHES if ("recommend", TARGET_SIZE, batch) in results}
    print(json.dumps({
        "ratio": ratios.get(1), "ratio_batch_64": ratios.get(64), "target": TARGET, "direction": "<=",
        "met": bool(ratios) and all(r <= TARGET for r in ratios.values()),
        "catalog": TARGET_SIZE, "batches": list(TARGET_BATCHES), "k": args.k, "n": args.n,
        "embedding_dim": args.embedding_dim, "history_content": args.history_content,
        "quick": args.quick, "sizes": sizes, "p50_ms": p50s, "p99_ms": p99s,
        "wall_s": round(time.perf_counter() - start, 1),
        # 1-minute load average at the start and the end: how busy the machine was (2 cores here).
        "load_average": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
    }))


if __name__ == "__main__":
    main()
