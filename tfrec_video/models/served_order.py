"""`ServedOrder`: what serving and evaluation ask of a trained `VideoRecModel` about a whole catalog.

A served list is made in two steps. Retrieval scores every catalog video and
keeps `k` candidates (the videos to leave out, such as the user's watched ones,
left out: `tfrec_video.evaluation.candidates`). The ranking stage then orders
those `k` and keeps `n`. The second step is `serve_candidates`, one piece of
code for the export's `serving_default` (`tfrec_video.serving.export`) and for
the lists evaluation judges (`tfrec_video.evaluation.served`), so the two can
never differ. It works on `encode_catalog`'s per-video parts, computed once, so
a request costs a gather and the ranking head, not a tokenizer and a CNN per
candidate.

A mixin of `VideoRecModel`: it reads `encode_videos`, `candidate_tower`,
`rank_logits_from_parts`, `video_feature_names` and `list_blend` of the model.

Example:

>>> parts = model.encode_catalog(catalog)                                   # doctest: +SKIP
>>> embeddings = parts.pop("embedding")                                      # doctest: +SKIP
>>> query = model.encode_queries(features, training=False)                   # doctest: +SKIP
>>> scores, rows = top_k_excluding(query["embedding"] @ tf.transpose(embeddings), k=100)  # doctest: +SKIP
>>> served = model.serve_candidates(query, parts, scores, rows, n=10)       # doctest: +SKIP
>>> served["rows"].shape                                                     # doctest: +SKIP
TensorShape([1024, 10])
"""

from typing import Dict, Mapping

import numpy as np
import tensorflow as tf


class ServedOrder:
    """The catalog-side stages of `VideoRecModel` (see module docstring)."""

    def encode_catalog(self, catalog: Mapping[str, np.ndarray], batch_size: int = 4096) -> Dict[str, tf.Tensor]:
        """`encode_videos` of a whole catalog (column arrays), in catalog order: what serving precomputes."""
        parts: Dict[str, list] = {}
        names = self.video_feature_names
        for start in range(0, len(catalog["video_id"]), batch_size):
            batch = {name: tf.constant(np.asarray(catalog[name])[start:start + batch_size]) for name in names}
            for name, value in self.encode_videos(batch, training=False).items():
                parts.setdefault(name, []).append(value)
        return {name: tf.concat(values, axis=0) for name, values in parts.items()}

    def fill_catalog_table(self, catalog: Mapping[str, np.ndarray]) -> None:
        """Fills `catalog_table` with `catalog` (column arrays), plus, when the model prepares its catalog,
        the tower's `prepare_catalog` columns (title tokens, PCA projections). Their unknown-video row
        holds what an empty video prepares to (the PCA of a zero vector is not zero)."""
        unknown = None
        if self.prepared_catalog:
            # The table's own unknown-video row of the content ("" and zeros), prepared.
            empty = {name: self.catalog_table.values[name][:1].numpy() for name in self.content_columns}
            prepared = self.candidate_tower.prepare_catalog(dict(empty, video_id=np.array([""], object)))
            unknown = {name: prepared[name][0] for name in self.candidate_tower.prepared_columns}
            catalog = self.candidate_tower.prepare_catalog(catalog)
        self.catalog_table.set_catalog(catalog, unknown=unknown)

    def embed_catalog_table(self, batch_size: int = 4096) -> tf.Tensor:
        """`[catalog_table.size, embedding_dim]`: `embed_videos` of every row of the model's own
        `CatalogTable` (row i is table row i + 1), what `encode_queries(catalog_embeddings=)` gathers
        watched videos from when serving a catalog other than the table's."""
        table = self.catalog_table
        chunks = []
        for start in range(1, table.size + 1, batch_size):
            stop = min(start + batch_size, table.size + 1)
            features = {name: value[start:stop] for name, value in table.values.items()}
            features["video_id"] = table.ids[start:stop]
            chunks.append(self.embed_videos(features, training=False))
        return tf.concat(chunks, axis=0)

    def rank_candidates(self, query: Mapping[str, tf.Tensor], catalog_parts: Mapping[str, tf.Tensor],
                        rows: tf.Tensor) -> tf.Tensor:
        """Click logits `[batch, k]` of the catalog rows `rows` (`[batch, k]`) for each user of `query`.

        `catalog_parts` is `encode_catalog`'s output; its `embedding` may be the retrieval index itself
        (serving keeps one copy of the catalog's embeddings). Without it, the k candidates' embeddings
        are re-projected from their encodings (a small MLP)."""
        per_query = tf.shape(rows)[1]
        flat = tf.reshape(rows, [-1])
        video = {name: tf.gather(values, flat) for name, values in catalog_parts.items()}
        if "embedding" not in video:
            video["embedding"] = self.candidate_tower.project(video["encoding"], training=False)
        per_user = ("history", "history_mask")
        if self.target_attention is not None:
            # Each user's watched videos against its k candidates at once, not repeated k times.
            targets = video.get("target", video["embedding"])
            grouped = tf.reshape(targets, tf.concat([tf.shape(rows), tf.shape(targets)[1:]], axis=0))
            attention = self.target_attention(query["history"], query["history_mask"], grouped)
            video["attention"] = tf.reshape(attention, [-1, attention.shape[-1]])
        logits = self.rank_logits_from_parts(
            {name: tf.repeat(value, per_query, axis=0) for name, value in query.items() if name not in per_user},
            video, training=False)
        return tf.reshape(logits, tf.shape(rows))

    def list_order_scores(self, retrieval_scores: tf.Tensor, catalog_parts: Mapping[str, tf.Tensor],
                          rows: tf.Tensor, click_logits: tf.Tensor) -> tf.Tensor:
        """The scores `[batch, k]` that order the served list: `ListBlend`'s, or the click logits."""
        if self.list_blend is None:
            return click_logits
        return self.list_blend(retrieval_scores, tf.gather(catalog_parts["log_popularity"], rows), click_logits)

    def serve_candidates(self, query: Mapping[str, tf.Tensor], catalog_parts: Mapping[str, tf.Tensor],
                         retrieval_scores: tf.Tensor, rows: tf.Tensor, n: int) -> Dict[str, tf.Tensor]:
        """The served list: retrieved candidates ranked and cut to `n`. The one code path of the export's
        `serving_default` and of evaluation's `served_lists`.

        Args:
          query: `encode_queries` of the users.
          catalog_parts: `encode_catalog`'s output (`embedding` optional, see `rank_candidates`).
          retrieval_scores: `[batch, k]` retrieval scores of the candidates.
          rows: `[batch, k]` their catalog rows (the videos to leave out are already left out).
          n: the served list's length (`n <= k`): an int or a scalar int tensor (the export's
            `min(n, k, num_videos)`).

        Returns:
          `rows`, `click_logits` and `retrieval_scores` of the served videos, each `[batch, n]`, in
          served order (`list_order_scores`, best first).
        """
        logits = self.rank_candidates(query, catalog_parts, rows)
        _, order = tf.math.top_k(self.list_order_scores(retrieval_scores, catalog_parts, rows, logits), k=n)
        return {"rows": tf.gather(rows, order, batch_dims=1), "click_logits": tf.gather(logits, order, batch_dims=1),
                "retrieval_scores": tf.gather(retrieval_scores, order, batch_dims=1)}
