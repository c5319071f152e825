"""Whole-catalog retrieval evaluation: TFRS `FactorizedTopK` against a batched matmul + rank count.

Method. Seeded, L2-normalised random query embeddings (one per test click) and
a catalog of N video embeddings (100k by default, `--quick` too), each click's
true video drawn at random and its query pulled towards it so that recall is
neither 0 nor 1. Recall@10/50/100 are computed twice over the same clicks, in
batches of `--batch` queries:

* `factorized_top_k`: `tfrs.metrics.FactorizedTopK` over a
  `tfrs.layers.factorized_top_k.BruteForce` index of the catalog, the TFRS
  tutorials' evaluation (`update_state(queries, true_video_embeddings)`);
* `batched`: what `tfrec_video.evaluation.evaluate` does: `queries @ catalog.T`
  in numpy, then the rank of the true video is the count of scores above it
  (`ranks_from_scores`); Recall@K = mean(rank < K). No top-k is ever sorted.

Both are timed after one warm-up batch. ratio = time(factorized_top_k) /
time(batched); target >= 1 (the batched evaluator at least as fast). The
recalls must agree exactly (ties aside: none occur with random floats): if
they do and the batched one is faster, it is the default, which it is.
The last line is JSON.

    python benchmarks/evaluation.py [--quick] [--catalog 100000] [--clicks 5000]
"""

import argparse
import json
import os
import platform
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_video.evaluation import ranks_from_scores, retrieval_metrics

KS = (10, 50, 100)


def _normalise(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clicks (well under 2 minutes)")
    parser.add_argument("--catalog", type=int, default=100_000)
    parser.add_argument("--clicks", type=int, default=None)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    args.clicks = args.clicks or (2048 if args.quick else 8192)

    rng = np.random.default_rng(0)
    catalog = _normalise(rng.normal(size=(args.catalog, args.dim)))
    target = rng.integers(0, args.catalog, args.clicks)
    queries = _normalise(catalog[target] * 0.35 + rng.normal(size=(args.clicks, args.dim)) / np.sqrt(args.dim))

    # TFRS: a BruteForce index over the catalog and the FactorizedTopK metric.
    index = tfrs.layers.factorized_top_k.BruteForce(k=max(KS))
    index.index(tf.constant(catalog))
    metric = tfrs.metrics.FactorizedTopK(candidates=index, ks=KS)
    @tf.function
    def update(q, t):
        metric.update_state(q, t)

    batches = [(tf.constant(queries[i:i + args.batch]), tf.constant(catalog[target[i:i + args.batch]]))
               for i in range(0, args.clicks, args.batch)]
    update(*batches[0])
    metric.reset_states()
    start = time.perf_counter()
    for q, t in batches:
        update(q, t)
    tfrs_seconds = time.perf_counter() - start
    tfrs_recall = {f"recall@{k}": float(m.result().numpy()) for k, m in zip(KS, metric._top_k_metrics)}

    def batched():
        ranks = [ranks_from_scores(queries[i:i + args.batch] @ catalog.T, target[i:i + args.batch])
                 for i in range(0, args.clicks, args.batch)]
        return retrieval_metrics(np.concatenate(ranks), KS)

    batched()
    start = time.perf_counter()
    ours = batched()
    ours_seconds = time.perf_counter() - start
    ours_recall = {f"recall@{k}": ours[f"recall@{k}"] for k in KS}
    exact = all(abs(tfrs_recall[k] - ours_recall[k]) < 1e-6 for k in ours_recall)
    print(json.dumps({"evaluator": "factorized_top_k", "seconds": round(tfrs_seconds, 3), **tfrs_recall}))
    print(json.dumps({"evaluator": "batched", "seconds": round(ours_seconds, 3), **ours_recall}))
    print(json.dumps({"benchmark": "evaluation", "ratio": round(tfrs_seconds / ours_seconds, 2), "target": 1.0,
                      "direction": ">=", "exact": exact, "catalog": args.catalog, "clicks": args.clicks,
                      "clicks_per_s": {"factorized_top_k": round(args.clicks / tfrs_seconds),
                                       "batched": round(args.clicks / ours_seconds)},
                      "machine": platform.machine(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
