"""Catalog rows of video ids, and the one rule that leaves videos out of a top-k list.

Three places decide which catalog videos a user is shown, and all three must
leave out the same ones in the same way: the export's `retrieve` and
`serving_default` signatures (`tfrec_video.serving.export`), the served lists
that evaluation judges (`served_lists`) and training's validation recall
(`RetrievalRecall`). They share:

* `catalog_rows(index_of, ids)`: video ids of any shape (`[batch, m]` of
  watched or excluded videos, say) → catalog rows, -1 for `""` padding and for
  ids outside the catalog. Host side (numpy), for data read from files.
* `mask_rows(scores, exclude)`: whole-catalog scores `[batch, num_videos]` with
  each row's excluded catalog rows (`[batch, m]`, -1 ignored) pushed to the
  lowest float, so they rank below every other video.
* `top_k_excluding(scores, k, exclude)`: the `k` best catalog rows that are not
  excluded, and their (unmasked) scores. Exactly `k` rows whatever `m` is; only
  a catalog with fewer than `k` videos left fills the list's tail with excluded
  ones (in catalog order).

The graph ops are core TF (a scatter and `top_k`), so the export that uses them
is servable by stock TF Serving.

Example:

>>> import numpy as np
>>> index_of = catalog_index(np.array(["a", "b", "c"], object))
>>> catalog_rows(index_of, np.array([[b"c", b""], [b"zz", b"a"]])).tolist()
[[2, -1], [-1, 0]]
>>> scores, rows = top_k_excluding(tf.constant([[0.75, 0.5, 0.625]]), 2, tf.constant([[0, -1]]))
>>> rows.numpy().tolist(), scores.numpy().tolist()
([[2, 1]], [[0.625, 0.5]])
"""

from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import as_strings


def catalog_index(video_ids) -> Dict[str, int]:
    """`{video id: catalog row}` of a catalog's `video_id` column (`str` keys, whatever the array holds)."""
    return {v: i for i, v in enumerate(as_strings(video_ids))}


def catalog_rows(index_of: Mapping[str, int], ids) -> np.ndarray:
    """Catalog rows `int64` of `ids`, in the shape of `ids`.

    Args:
      index_of: `{video id: row}`, as `catalog_index` builds it.
      ids: video ids of any shape (`bytes` from tensors, `str`, a `tf.Tensor`).

    Returns:
      The rows; -1 for `""` (padding) and for ids that are not in the catalog.
    """
    ids = np.asarray(ids)
    flat = as_strings(ids)
    rows = np.fromiter((index_of.get(v, -1) if v else -1 for v in flat), np.int64, count=len(flat))
    return rows.reshape(ids.shape)


def mask_rows(scores: tf.Tensor, exclude: tf.Tensor) -> tf.Tensor:
    """`scores` `[batch, num_videos]` with the catalog rows in `exclude` set to the lowest float.

    Args:
      scores: whole-catalog scores; column `j` is catalog row `j`.
      exclude: `[batch, m]` integer catalog rows to leave out of each row's ranking
        (`m` may be 0); negative rows (padding, unknown ids) and rows past the
        catalog are ignored, and a row may repeat.

    Returns:
      The masked scores: an excluded video ranks below every other one.
    """
    exclude = tf.cast(exclude, tf.int64)
    num_videos = tf.shape(scores, out_type=tf.int64)[1]
    batch = tf.broadcast_to(tf.range(tf.shape(exclude, out_type=tf.int64)[0])[:, None], tf.shape(exclude))
    valid = (exclude >= 0) & (exclude < num_videos)
    indices = tf.stack([tf.boolean_mask(batch, valid), tf.boolean_mask(exclude, valid)], axis=1)
    # A scatter of the few excluded cells, not a [batch, num_videos, m] comparison: m may be large, and
    # `min` (not `update`) is deterministic when a row repeats.
    lowest = tf.fill(tf.shape(indices)[:1], scores.dtype.min)
    return tf.tensor_scatter_nd_min(scores, indices, lowest)


def top_k_excluding(scores: tf.Tensor, k: int, exclude: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """The `k` best catalog rows of each query, the rows in `exclude` left out.

    Args:
      scores: whole-catalog scores `[batch, num_videos]` (`num_videos >= k`).
      k: the list's length: an int or a scalar int tensor (the export passes
        `min(k, num_videos)`, so a catalog refreshed below `k` videos still serves).
      exclude: `[batch, m]` catalog rows to leave out (see `mask_rows`), or None.

    Returns:
      `(scores [batch, k], rows [batch, k] int32)`, best first. The scores are the
      unmasked ones, also for excluded rows a too-small catalog puts in the tail.
    """
    masked = scores if exclude is None else mask_rows(scores, exclude)
    _, rows = tf.math.top_k(masked, k=k)
    return tf.gather(scores, rows, batch_dims=1), rows
