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

A model with a watch head (`ModelConfig.ranking_objectives`) orders the list by

    score = click_weight * click_term + watch_weight * log(expected watch)

where the click term is what orders a click-only model's list (`list_order_scores`)
and the expected watch is the head's expected watched fraction, times the video's
`duration_s` when the model reads durations (`log_duration`): with both weights 1
the list is ordered by expected watch time per impression (the click term is a
log-odds of the click, close to its log-probability for the small probabilities
of a catalog). The weights default to `(1, ModelConfig.watch_score_weight)`; the
export's `rank_weighted` signature takes them per request.

`diversity` (per request, 0-1) re-orders the candidates by maximal marginal
relevance over their retrieval embeddings (`models.diversify`) instead of by
score alone: 0 is the plain order.

A mixin of `VideoRecModel`: it reads `encode_videos`, `candidate_tower`,
`rank_outputs_from_parts`, `video_feature_names`, `config` and `list_blend` of the model.

Example:

>>> parts = model.encode_catalog(catalog)                                   # doctest: +SKIP
>>> embeddings = parts.pop("embedding")                                      # doctest: +SKIP
>>> query = model.encode_queries(features, training=False)                   # doctest: +SKIP
>>> scores, rows = top_k_excluding(query["embedding"] @ tf.transpose(embeddings), k=100)  # doctest: +SKIP
>>> served = model.serve_candidates(query, parts, scores, rows, n=10)       # doctest: +SKIP
>>> served["rows"].shape                                                     # doctest: +SKIP
TensorShape([1024, 10])
"""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.models.diversify import maximal_marginal_relevance


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
                        rows: tf.Tensor, objectives: bool = False):
        """Click logits `[batch, k]` of the catalog rows `rows` (`[batch, k]`) for each user of `query`
        (`objectives=True`: a dict of every head's logits, `click` and, for a watch model, `watch`).

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
        logits = self.rank_outputs_from_parts(
            {name: tf.repeat(value, per_query, axis=0) for name, value in query.items() if name not in per_user},
            video, training=False)
        logits = {name: tf.reshape(value, tf.shape(rows)) for name, value in logits.items()}
        return logits if objectives else logits["click"]

    def list_order_scores(self, retrieval_scores: tf.Tensor, catalog_parts: Mapping[str, tf.Tensor],
                          rows: tf.Tensor, click_logits: tf.Tensor) -> tf.Tensor:
        """The scores `[batch, k]` that order the served list: `ListBlend`'s, or the click logits."""
        if self.list_blend is None:
            return click_logits
        return self.list_blend(retrieval_scores, tf.gather(catalog_parts["log_popularity"], rows), click_logits)

    def log_expected_watch(self, catalog_parts: Mapping[str, tf.Tensor], rows: tf.Tensor,
                           watch_logits: tf.Tensor) -> tf.Tensor:
        """`[batch, k]`: the log of each candidate's expected watch once clicked: its expected watched
        fraction, times its duration in seconds when the model reads durations."""
        log_watch = tf.math.log_sigmoid(watch_logits)
        if "log_duration" in catalog_parts:
            log_watch += tf.gather(catalog_parts["log_duration"], rows)
        return log_watch

    def serve_candidates(self, query: Mapping[str, tf.Tensor], catalog_parts: Mapping[str, tf.Tensor],
                         retrieval_scores: tf.Tensor, rows: tf.Tensor, n: int,
                         score_weights: Optional[Sequence[tf.Tensor]] = None,
                         diversity: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
        """The served list: retrieved candidates ranked and cut to `n`. The one code path of the export's
        `serving_default` and of evaluation's `served_lists`.

        Args:
          query: `encode_queries` of the users.
          catalog_parts: `encode_catalog`'s output (`embedding` optional, see `rank_candidates`).
          retrieval_scores: `[batch, k]` retrieval scores of the candidates.
          rows: `[batch, k]` their catalog rows (the videos to leave out are already left out).
          n: the served list's length (`n <= k`): an int or a scalar int tensor (the export's
            `min(n, k, num_videos)`).
          score_weights: a watch model's `(click_weight, watch_weight)` (see module docstring), each a float
            or a `[batch]` tensor (one per user); default `(1, ModelConfig.watch_score_weight)`. Ignored
            by a click-only model.
          diversity: `[batch]` or a scalar in [0, 1]: re-order by maximal marginal relevance (None or 0:
            by score alone).

        Returns:
          `rows`, `click_logits`, `retrieval_scores` and `scores` (what orders the list) of the served
          videos, each `[batch, n]`, in served order (best first), and for a watch model `watch_logits`
          and `log_expected_watch`.
        """
        logits = self.rank_candidates(query, catalog_parts, rows, objectives=True)
        scores = self.list_order_scores(retrieval_scores, catalog_parts, rows, logits["click"])
        served = {"click_logits": logits["click"], "retrieval_scores": retrieval_scores}
        if "watch" in logits:
            click_weight, watch_weight = (1.0, self.config.watch_score_weight) if score_weights is None \
                else score_weights
            served.update(watch_logits=logits["watch"],
                          log_expected_watch=self.log_expected_watch(catalog_parts, rows, logits["watch"]))
            scores = (_per_user(click_weight) * scores + _per_user(watch_weight) * served["log_expected_watch"])
        served["scores"] = scores
        if diversity is None:
            _, order = tf.math.top_k(scores, k=n)
        else:
            if "embedding" in catalog_parts:
                embeddings = tf.gather(catalog_parts["embedding"], rows)
            else:
                embeddings = self.candidate_tower.project(tf.gather(catalog_parts["encoding"], rows), training=False)
            order = maximal_marginal_relevance(scores, embeddings, diversity, n)
        return dict({name: tf.gather(value, order, batch_dims=1) for name, value in served.items()},
                    rows=tf.gather(rows, order, batch_dims=1))


def _per_user(weight):
    """A score weight as `[batch, 1]` (from `[batch]`) or a scalar, to scale `[batch, k]` scores."""
    weight = tf.cast(weight, tf.float32)
    return weight[:, None] if weight.shape.rank == 1 else weight
