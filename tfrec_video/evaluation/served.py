"""The two lists a user is shown: `retrieve`'s top n and `serving_default`'s top n, and their hit rates.

The ranking stage earns its place only if the list it serves (the top `k`
retrieved, re-ordered by click probability, cut to `n`) holds the video the user
then clicks more often than retrieval's own top `n`. `evaluate` reports both on
the same test clicks: `serving.hr@n` and `retrieval.hr@n` (the share of clicks
whose video is in the list).

`served_lists(model, catalog, k, n)` returns a function from a batch of
impressions to the two lists as catalog rows `[batch, n]`:

* a Keras `VideoRecModel` computes them as its export does (`encode_catalog`
  once, then per batch a whole-catalog matmul, `top_k`, and `rank_candidates`);
* a model with `served_lists` of its own (`ExportedModel`) answers from the
  export's `retrieve` and `serving_default` signatures, so a SavedModel is
  judged by exactly what it serves.

Example:

>>> lists = served_lists(model, catalog, k=100, n=10)     # doctest: +SKIP
>>> retrieved, served = lists(test_batch)                # doctest: +SKIP
>>> retrieved.shape, served.shape                        # doctest: +SKIP
((1024, 10), (1024, 10))
"""

from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import as_strings

Lists = Callable[[Mapping[str, tf.Tensor]], Tuple[np.ndarray, np.ndarray]]


def served_lists(model, catalog: Mapping[str, np.ndarray], k: int = 100, n: int = 10,
                 max_scores: int = 1 << 26) -> Optional[Lists]:
    """`features -> (retrieved rows [batch, n], served rows [batch, n])` (see module docstring), or None
    for a model that has neither two stages nor `served_lists` (a retrieval-only baseline).

    Args:
      model: a `VideoRecModel`, or a model with `served_lists(features) -> (ids, ids)`.
      catalog: the catalog as column arrays; rows index it (-1: a video outside it).
      k: candidates retrieved before ranking (the export's `k`).
      n: the length of both lists (the export's `n`).
      max_scores: the most floats of one whole-catalog score matrix (queries go in chunks).
    """
    index_of = {v: i for i, v in enumerate(as_strings(catalog["video_id"]))}
    if hasattr(model, "served_lists"):
        def from_ids(features):
            retrieved, served = model.served_lists(features)
            def rows(ids):
                ids = np.asarray(ids)
                flat = np.array([index_of.get(v, -1) for v in as_strings(ids)], np.int64)
                return flat.reshape(ids.shape)

            return rows(retrieved), rows(served)

        return from_ids
    if not all(hasattr(model, name) for name in ("encode_catalog", "encode_queries", "rank_candidates",
                                                 "list_order_scores")):
        return None
    parts = model.encode_catalog(catalog)
    embeddings = parts.pop("embedding")
    num_videos = int(embeddings.shape[0])
    k = min(int(k), num_videos)
    n = min(int(n), k)
    chunk = max(1, int(max_scores) // num_videos)

    @tf.function(reduce_retracing=True)
    def lists(features):
        query = model.encode_queries(features, training=False)
        scores, rows = tf.math.top_k(tf.matmul(query["embedding"], embeddings, transpose_b=True), k=k)
        logits = model.rank_candidates(query, parts, rows)
        _, order = tf.math.top_k(model.list_order_scores(scores, parts, rows, logits), k=n)
        return rows[:, :n], tf.gather(rows, order, batch_dims=1)

    names = list(model.query_feature_names)

    def in_chunks(features):
        size = int(tf.shape(features[names[0]])[0])
        out = [lists({name: features[name][i:i + chunk] for name in names}) for i in range(0, size, chunk)]
        return (np.concatenate([r.numpy() for r, _ in out]) if out else np.zeros((0, n), np.int64),
                np.concatenate([s.numpy() for _, s in out]) if out else np.zeros((0, n), np.int64))

    return in_chunks


def hit_rate(lists: np.ndarray, target: np.ndarray) -> float:
    """The share of rows whose `target` row is in their list (NaN for no rows)."""
    lists, target = np.asarray(lists), np.asarray(target).reshape(-1)
    return float((lists == target[:, None]).any(axis=1).mean()) if len(target) else float("nan")
