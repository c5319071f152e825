"""Ranks of the true video among a whole catalog: the retrieval evaluator.

`CatalogRanker` scores query embeddings against every catalog video in one
traced function and counts the videos at or above the true one, so no top-k is
sorted and rounding can never put the true video above itself (TFRS's
`FactorizedTopK` scores it twice and can; `benchmarks/evaluation.py` compares
the two). `evaluate` and the `RetrievalRecall` callback both use it.

Example:

>>> import numpy as np
>>> ranks_from_scores(np.array([[0.1, 0.9, 0.4]]), np.array([2]))
array([1])
"""

import weakref
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from tfrec_video.evaluation.candidates import mask_rows

_EMBED_VIDEOS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def ranks_from_scores(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's `target` column among that row's scores (ties pessimistic)."""
    true = scores[np.arange(len(target)), target]
    return np.count_nonzero(scores >= true[:, None], axis=1) - 1


def _count(videos, queries, target, exclude=None):
    scores = tf.matmul(queries, videos, transpose_b=True)
    if exclude is not None:
        scores = mask_rows(scores, exclude)
    true = tf.gather(scores, target, axis=1, batch_dims=1)
    ranks = tf.reduce_sum(tf.cast(scores >= true[:, None], tf.int64), axis=1) - 1
    if exclude is not None:
        # An excluded true video is never shown; its masked score would tie with the other excluded ones.
        hidden = tf.reduce_any(tf.equal(exclude, target[:, None]), axis=1)
        ranks = tf.where(hidden, tf.cast(tf.shape(videos)[0], tf.int64), ranks)
    return ranks


# Traced once per process for every ranker, with the catalog as an argument: a per-ranker function
# (an evaluation builds several) made TF warn about retracing after every training run.
_MATRIX = tf.TensorSpec([None, None], tf.float32)
_RANKS = tf.function(_count, input_signature=[_MATRIX, _MATRIX, tf.TensorSpec([None], tf.int64)])
_RANKS_EXCLUDING = tf.function(_count, input_signature=[_MATRIX, _MATRIX, tf.TensorSpec([None], tf.int64),
                                                        tf.TensorSpec([None, None], tf.int64)])


class CatalogRanker:
    """Exact 0-based ranks of each query's true video among a whole catalog of embeddings.

    The batched matmul + count evaluator that `evaluate` and the
    `RetrievalRecall` callback use: scores = queries @ videos^T (`tf.matmul`),
    and the rank of the true video is the number of other videos scoring at or
    above it (ties count against it, as in `ranks_from_scores`). Queries are
    scored in chunks that keep the score matrix near `max_scores` floats, so a
    1M-video catalog does not need gigabytes per batch. With `exclude`, each
    query's excluded catalog rows (its watched videos, say) are left out first
    (`candidates.mask_rows`, the rule the export serves by): they count for no
    rank, and a true video that is itself excluded ranks `num_videos`, beyond
    every list.

    Args:
      video_embeddings: `[num_videos, dim]` catalog embeddings (`embed_catalog`).
      max_scores: upper bound on the floats of one chunk's score matrix.

    Example:

    >>> ranker = CatalogRanker(np.eye(3, dtype=np.float32))
    >>> ranker(np.array([[0.1, 0.9, 0.4]], np.float32), np.array([2])).tolist()
    [1]
    """

    def __init__(self, video_embeddings: np.ndarray, max_scores: int = 1 << 26):
        videos = np.asarray(video_embeddings, np.float32)
        if videos.ndim != 2 or not len(videos):
            raise ValueError(f"CatalogRanker: expected [num_videos, dim] embeddings, got shape {videos.shape}.")
        self.num_videos, self.dim = videos.shape
        # A variable, so that `set_videos` reuses the traced function (a callback ranks every epoch).
        self._videos = tf.Variable(videos, trainable=False)
        self._chunk = max(1, int(max_scores) // self.num_videos)

    def set_videos(self, video_embeddings: np.ndarray) -> None:
        """Replaces the catalog embeddings by ones of the same shape (the same videos, a newer model)."""
        videos = np.asarray(video_embeddings, np.float32)
        if videos.shape != (self.num_videos, self.dim):
            raise ValueError(f"CatalogRanker: expected embeddings of shape {(self.num_videos, self.dim)}, "
                             f"got {videos.shape}.")
        self._videos.assign(videos)

    def __call__(self, queries: np.ndarray, target: np.ndarray, exclude: Optional[np.ndarray] = None) -> np.ndarray:
        """Ranks `[n]` of `target` (catalog rows) for `queries` `[n, dim]`.

        `exclude` (`[n, m]` catalog rows, -1 ignored; `candidates.catalog_rows` makes them from ids)
        leaves each query's rows out of its ranking."""
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        target = np.asarray(target, np.int64).reshape(-1)
        if len(queries) != len(target):
            raise ValueError(f"CatalogRanker: {len(queries)} queries but {len(target)} targets.")
        if len(target) and (target.min() < 0 or target.max() >= self.num_videos):
            raise ValueError(f"CatalogRanker: targets must be catalog rows in [0, {self.num_videos}).")
        if exclude is not None:
            exclude = np.asarray(exclude, np.int64).reshape(len(target), -1)
        chunks = [slice(i, i + self._chunk) for i in range(0, len(target), self._chunk)]
        ranks = [(_RANKS(self._videos, queries[c], target[c]) if exclude is None else
                  _RANKS_EXCLUDING(self._videos, queries[c], target[c], exclude[c])).numpy() for c in chunks]
        return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def embed_catalog(model, catalog: Mapping[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Video embeddings `[num_videos, dim]` of the whole catalog, in catalog order."""
    names = model.video_feature_names
    data = tf.data.Dataset.from_tensor_slices({n: catalog[n] for n in names}).batch(batch_size)
    # One traced function per model: callbacks call this every epoch. It holds the model weakly,
    # or the cache would keep every model alive.
    embed = _EMBED_VIDEOS.get(model)
    if embed is None:
        ref = weakref.ref(model)
        embed = _EMBED_VIDEOS.setdefault(model, tf.function(lambda f: ref().embed_videos(f, training=False)))
    return np.concatenate([embed(batch).numpy() for batch in data], axis=0)
