"""The two lists a user is shown: `retrieve`'s top n and `serving_default`'s top n, and their hit rates.

The ranking stage earns its place only if the list it serves (the top `k`
retrieved, re-ordered by click probability, cut to `n`) holds the video the user
then clicks more often than retrieval's own top `n`. `evaluate` reports both on
the same test clicks: `serving.hr@n` and `retrieval.hr@n` (the share of clicks
whose video is in the list).

`served_lists(model, catalog, k, n)` returns a function from a batch of
impressions to the two lists as catalog rows `[batch, n]`:

* a Keras `VideoRecModel` computes them as its export does: `encode_catalog`
  once, then per batch a whole-catalog matmul, `candidates.top_k_excluding`
  and `serve_candidates`, the very functions the export's graph calls;
* a model with `served_lists` of its own (`ExportedModel`) answers from the
  export's `retrieve` and `serving_default` signatures, so a SavedModel is
  judged by exactly what it serves.

`exclude_seen=True` leaves each impression's `history` videos out of both
lists, as the export does by default, and they still hold `n` videos (an
`ExportedModel` gets the history as its `_excluding` signatures' `exclude`).
The default, False, keeps them for a Keras model; an `ExportedModel` then
serves by its own export rule.

Example:

>>> lists = served_lists(model, catalog, k=100, n=10)     # doctest: +SKIP
>>> retrieved, served = lists(test_batch)                # doctest: +SKIP
>>> retrieved.shape, served.shape                        # doctest: +SKIP
((1024, 10), (1024, 10))
"""

from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.evaluation.candidates import catalog_index, catalog_rows, top_k_excluding

Lists = Callable[[Mapping[str, tf.Tensor]], Tuple[np.ndarray, np.ndarray]]


def _history(features):
    if "history" not in features:
        raise ValueError(f"served_lists(exclude_seen=True): the batch has no `history` feature (it has "
                         f"{sorted(features)}).")
    return features["history"]


def served_lists(model, catalog: Mapping[str, np.ndarray], k: int = 100, n: int = 10, *,
                 exclude_seen: bool = False, max_scores: int = 1 << 26) -> Optional[Lists]:
    """`features -> (retrieved rows [batch, n], served rows [batch, n])` (see module docstring), or None
    for a model that has neither two stages nor `served_lists` (a retrieval-only baseline).

    Args:
      model: a `VideoRecModel`, or a model with `served_lists(features, exclude=None) -> (ids, ids)`.
      catalog: the catalog as column arrays; rows index it (-1: a video outside it).
      k: candidates retrieved before ranking (the export's `k`).
      n: the length of both lists (the export's `n`).
      exclude_seen: leave each impression's `history` videos out of both lists (the batches must
        then have `history`); the lists still hold `n` videos.
      max_scores: the most floats of one whole-catalog score matrix (queries go in chunks).

    Example:

    >>> lists = served_lists(model, catalog, k=100, n=50, exclude_seen=True)   # doctest: +SKIP
    >>> retrieved, served = lists(batch)                                       # doctest: +SKIP
    """
    index_of = catalog_index(catalog["video_id"])
    if hasattr(model, "served_lists"):
        def from_ids(features):
            exclude = {"exclude": _history(features)} if exclude_seen else {}
            retrieved, served = model.served_lists(features, **exclude)
            return catalog_rows(index_of, retrieved), catalog_rows(index_of, served)

        return from_ids
    if not all(hasattr(model, name) for name in ("encode_catalog", "encode_queries", "serve_candidates")):
        return None
    parts = model.encode_catalog(catalog)
    embeddings = parts.pop("embedding")
    num_videos = int(embeddings.shape[0])
    k = min(int(k), num_videos)
    n = min(int(n), k)
    chunk = max(1, int(max_scores) // num_videos)

    @tf.function(reduce_retracing=True)
    def lists(features, exclude):
        query = model.encode_queries(features, training=False)
        scores, rows = top_k_excluding(tf.matmul(query["embedding"], embeddings, transpose_b=True), k, exclude)
        return rows[:, :n], model.serve_candidates(query, parts, scores, rows, n)["rows"]

    names = list(model.query_feature_names)

    def one_chunk(features, rows):
        # The watched ids become catalog rows here, on the host: the catalog is a Python dict, not a graph table.
        exclude = tf.constant(catalog_rows(index_of, _history(features)[rows])) if exclude_seen else None
        return lists({name: features[name][rows] for name in names}, exclude)

    def in_chunks(features):
        size = int(tf.shape(features[names[0]])[0])
        out = [one_chunk(features, slice(i, i + chunk)) for i in range(0, size, chunk)]
        return (np.concatenate([r.numpy() for r, _ in out]) if out else np.zeros((0, n), np.int64),
                np.concatenate([s.numpy() for _, s in out]) if out else np.zeros((0, n), np.int64))

    return in_chunks


def hit_rate(lists: np.ndarray, target: np.ndarray) -> float:
    """The share of rows whose `target` row is in their list (NaN for no rows)."""
    lists, target = np.asarray(lists), np.asarray(target).reshape(-1)
    return float((lists == target[:, None]).any(axis=1).mean()) if len(target) else float("nan")
