"""`ScannRetriever`: approximate top-K retrieval with ScaNN, in process only.

For large catalogs, brute-force retrieval (what the exported `serving_default`
does) costs one `[batch, catalog]` matmul per request. ScaNN
(`tfrs.layers.factorized_top_k.ScaNN`) partitions the catalog's embeddings into
leaves and quantises them, searching a fraction of the catalog instead.

**Not servable by stock TF Serving.** ScaNN runs as custom TensorFlow ops that
`tensorflow_model_server` does not link (tensorflow/recommenders#182), so a
SavedModel containing a ScaNN index fails to load there. Use this for offline
or in-process work (batch candidate generation, notebooks, evaluation sweeps);
`tfrec_video.serving.export` stays brute force, or export `embed_query` /
`embed_video` and build your own ANN service.

Install with `pip install -e ".[scann]"` (ScaNN 1.3.4, built for TF 2.17, Linux x86-64).

Example:

>>> retriever = ScannRetriever(model, catalog, k=100)                   # doctest: +SKIP
>>> scores, video_ids = retriever({"user_id": tf.constant(["u1"]), ...})  # doctest: +SKIP
"""

import math
from typing import Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf


def _import_scann():
    try:
        import scann  # noqa: F401  (registers the ScaNN ops tfrs uses)
    except ImportError as error:
        raise ImportError("ScannRetriever needs the optional ScaNN package: pip install -e \".[scann]\" "
                          "(scann==1.3.4 for TF 2.17).") from error
    import tensorflow_recommenders as tfrs

    return tfrs.layers.factorized_top_k.ScaNN


class ScannRetriever:
    """Top-`k` catalog videos for user features, through a ScaNN index of the video embeddings.

    Args:
      model: a trained `VideoRecModel` (anything with `embed_queries`, `embed_videos`
        and `video_feature_names`).
      catalog: the catalog as column arrays; every video in it can be retrieved.
      k: videos returned per query.
      num_leaves: ScaNN partitions; default about `sqrt(catalog size)`.
      num_leaves_to_search: partitions searched per query; default a tenth of them (at least 1).
      num_reordering_candidates: candidates re-scored exactly after the quantised
        search (default `4 * k`); this is what makes the top of the list exact.
      batch_size: rows per step when embedding the catalog.
    """

    def __init__(self, model, catalog: Mapping[str, np.ndarray], k: int = 100, num_leaves: Optional[int] = None,
                 num_leaves_to_search: Optional[int] = None, num_reordering_candidates: Optional[int] = None,
                 batch_size: int = 4096):
        scann_layer = _import_scann()
        num_videos = len(catalog["video_id"])
        if num_videos == 0:
            raise ValueError("ScannRetriever: the catalog is empty.")
        if k <= 0:
            raise ValueError(f"ScannRetriever: k must be positive, got {k}.")
        self.model = model
        self.k = min(int(k), num_videos)
        num_leaves = num_leaves or max(1, int(round(math.sqrt(num_videos))))
        num_leaves_to_search = num_leaves_to_search or max(1, num_leaves // 10)
        embeddings = []
        for start in range(0, num_videos, batch_size):
            batch = {name: tf.constant(np.asarray(catalog[name])[start:start + batch_size])
                     for name in model.video_feature_names}
            embeddings.append(model.embed_videos(batch, training=False))
        self.index = scann_layer(k=self.k, num_leaves=num_leaves, num_leaves_to_search=num_leaves_to_search,
                                 num_reordering_candidates=num_reordering_candidates or 4 * self.k)
        ids = tf.constant(np.asarray(catalog["video_id"]).astype(object))
        self.index.index(tf.concat(embeddings, axis=0), ids)

    def __call__(self, features: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """`(scores [batch, k], video_ids [batch, k])`, best first."""
        return self.index(self.model.embed_queries(features, training=False))
