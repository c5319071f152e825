"""`VideoRecModel`: retrieval and ranking, trained jointly with one `model.fit`.

    impressions (+ catalog features joined by video_id)
        │
        ├─ history ids ─CatalogTable─► content ─CandidateTower─► watched-video embeddings ─┐
        ├─ QueryTower.encode (user id, pooled watched videos, context) ◄──────────────────┘
        │     ──► qf ──project──► q  (L2-normalised)
        ├─ CandidateTower.encode ► cf ──project──► c  (L2-normalised)
        │
        ├─ retrieval: tfrs.tasks.Retrieval(q, c) in-batch softmax over the batch's videos,
        │    temperature, logQ correction, accidental-hit removal;
        │    sample_weight = clicked, so only clicked rows are positives
        └─ ranking:   RankingHead([qf, cf, q ⊙ c, TargetAttention(watched, c), user and video
             ClickCounts]) ──► logit; tfrs.tasks.Ranking with sigmoid cross-entropy on
             every impression (clicked or not)

    loss = retrieval_weight · L_retrieval + ranking_weight · L_ranking

The retrieval loss is a sum over clicked rows divided by their number, so its
scale does not depend on the click-through rate. Unclicked rows still supply
their videos as in-batch negatives; those videos were sampled by exposure, which
is what the logQ correction (estimated from training impression counts in
`Vocabularies`) removes. Whole-catalog top-K metrics are never computed per
training step; `tfrec_video.evaluation.report` computes them at evaluation time.

Under `tf.distribute` every replica computes this loss on its own slice of the
global batch, and `train_step` divides it by the number of replicas before the
gradients are summed across them, so N replicas take the step one device takes
on the whole batch. One thing does change: a replica's in-batch softmax sees
only its own slice's videos as negatives (`tfrs.tasks.Retrieval` does not
gather candidates across replicas), so each query has `batch / replicas`
candidates, not `batch`.

Under a mixed-precision policy (`mixed_float16`) the towers, the title CNN and
the ranking MLP compute in float16, while the retrieval embeddings (normalised
in float32 by the towers), the click logit (the ranking head's last layer is
float32), the retrieval scores and softmax, the sigmoid and every loss stay
float32. `train_step` applies the loss scaling of a `LossScaleOptimizer`, which
`compile` wraps the optimizer in under `mixed_float16`.

Example:

>>> import numpy as np, tensorflow as tf
>>> from tfrec_video.features import adapt
>>> catalog = {"video_id": np.array(["a", "b"], object), "title": np.array(["cat video", "dog video"], object)}
>>> impressions = {"user_id": np.array(["u1", "u2"], object), "video_id": np.array(["a", "b"], object),
...                "title": np.array(["cat video", "dog video"], object), "clicked": np.array([1, 0])}
>>> model = VideoRecModel(ModelConfig(embedding_dim=8), adapt(catalog, impressions, title_vocabulary_size=40))
>>> model.compile(tf.keras.optimizers.Adam(1e-3))
>>> history = model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(2), verbose=0)
>>> sorted(model(impressions))
['click_probability', 'query_embedding', 'retrieval_score', 'video_embedding']
"""

from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_video.errors import ConfigError
from tfrec_video.features.vocabulary import Vocabularies
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.data_rules import resolve as resolve_data_rules
from tfrec_video.models.dtype_policy import dtype_policy
from tfrec_video.models.list_blend import ListBlend
from tfrec_video.models.multi_task_head import MultiTaskRankingHead
from tfrec_video.models.ranking_head import RankingHead
from tfrec_video.models.served_order import ServedOrder
from tfrec_video.models.train_step import TrainStep
from tfrec_video.models.watch_loss import watch_fraction_loss
from tfrec_video.towers import CandidateTower, CatalogTable, ClickCounts, IdEmbedding, QueryTower, TargetAttention
from tfrec_video.towers.untracked import untracked

# `catalog=` value meaning "the catalog table's contents come from restored weights".
CATALOG_FROM_WEIGHTS = "from_weights"

_CONTENT_DTYPES = {"title": "string", "category": "string", "duration_s": "float32",
                   "image_embedding": "float32", "audio_embedding": "float32", "thumbnail": "string",
                   "audio": "string", "title_embedding": "float32"}


class VideoRecModel(ServedOrder, TrainStep, tfrs.Model):
    """The two-stage video recommender (see module docstring).

    Args:
      config: a `ModelConfig`.
      vocabularies: `Vocabularies` learned from the data by `tfrec_video.features.adapt`.
      catalog: the catalog as column arrays (the one given to `adapt`). Needed when
        `config.history_content` is on and the data has a `history`: the model
        keeps the catalog's content features in a `CatalogTable` so that watched
        videos are embedded from their content. `CATALOG_FROM_WEIGHTS` leaves the
        table to be filled by restoring weights (what `from_config` does).
      prepared_catalog: the table also holds each video's title tokens and PCA projections, computed
        once, not per watched video per step (`CandidateTower.prepared_columns`); False for older models.

    Raises:
      ConfigError: the model needs the catalog and none was given.
    """

    def __init__(self, config: ModelConfig, vocabularies: Vocabularies, catalog=None, prepared_catalog=True, **kwargs):
        # Raw features reach the towers uncast: each is cast by the layer that reads it (see EmbeddingTower).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(config, Mapping):
            config = ModelConfig.from_dict(config)
        if isinstance(vocabularies, Mapping):
            vocabularies = Vocabularies.from_dict(vocabularies)
        # `config` as given ("auto" fields and all) is what get_config saves; the model is built from the
        # resolved one, which the same vocabularies always give back.
        self.given_config = config
        self.prepared_catalog = bool(prepared_catalog)
        config, data_rules = resolve_data_rules(config, vocabularies)
        self.data_rules = untracked(data_rules)  # plain JSON for report.json, no variables
        self.config = config
        self.vocabularies = vocabularies
        tf.random.set_seed(config.seed)
        v = vocabularies
        self.video_embedding = IdEmbedding(v.video_ids, config.id_dim, config.video_oov_buckets,
                                           dropout=config.video_id_dropout, seed=config.seed, name="video_id")
        self.query_tower = QueryTower(
            v.user_ids, self.video_embedding, history_length=v.history_length, history_pooling=config.history_pooling,
            has_hour=v.has_hour, devices=v.devices, id_dim=config.id_dim, num_oov_buckets=config.user_oov_buckets,
            user_id_dropout=config.user_id_dropout,
            hidden_units=config.query_hidden_units, output_dim=config.embedding_dim, dropout=config.tower_dropout,
            name="query_tower")
        if catalog is not None and not isinstance(catalog, str):
            for column, wanted in (("thumbnail", config.image_model), ("audio", config.audio_model)):
                if wanted and column not in catalog:
                    raise ConfigError(f"VideoRecModel: ModelConfig.{'image' if column == 'thumbnail' else 'audio'}"
                                      f"_model is set, so the catalog needs a {column!r} column of raw bytes; it "
                                      f"has {sorted(catalog)}.")
        duration_stats = None if v.duration_log_mean is None else (v.duration_log_mean, v.duration_log_std)
        if config.title_encoder != "cnn" and not (config.text_model or v.title_embedding_dim):
            raise ConfigError(f"ModelConfig.title_encoder={config.title_encoder!r} needs a pretrained title vector: "
                              "set ModelConfig.text_model to a text encoder's SavedModel directory or TF Hub handle "
                              "(tfrec-video convert-text-encoder --out DIR writes one), or give the catalog a "
                              "title_embedding column (tfrec-video embed --text-model DIR --titles CATALOG).")
        try:  # The only ConfigError a tower raises is the text model's (`towers.pretrained_title`).
            self.candidate_tower = CandidateTower(
                self.video_embedding, v.title_tokens,
                title_options=dict(sequence_length=config.title_sequence_length, token_dim=config.title_token_dim,
                                   conv_widths=config.title_conv_widths, filters=config.title_filters,
                                   output_dim=config.title_dim),
                categories=v.categories, duration_stats=duration_stats, image_dim=v.image_dim, audio_dim=v.audio_dim,
                media_dim=config.media_dim, image_pca=v.image_pca, audio_pca=v.audio_pca,
                title_mode=config.title_encoder, title_embedding_dim=v.title_embedding_dim, title_pca=v.title_pca,
                **config.hub_encoders(),
                hidden_units=config.candidate_hidden_units, output_dim=config.embedding_dim,
                dropout=config.tower_dropout, name="candidate_tower")
        except ConfigError as error:
            raise ConfigError(f"ModelConfig.text_model: {error}") from None
        self.catalog_table = None
        if config.history_content and v.history_length:
            if catalog is None:
                raise ConfigError(
                    "VideoRecModel: ModelConfig.history_content=True embeds watched videos from their content, "
                    "so the model needs the catalog: VideoRecModel(config, vocabularies, catalog=catalog). "
                    "Pass history_content=False to pool history over id embeddings only.")
            size = v.catalog_size or (len(catalog["video_id"]) if not isinstance(catalog, str) else 0)
            self.catalog_table = CatalogTable(size, dict(self.content_columns, **(
                self.candidate_tower.prepared_columns if self.prepared_catalog else {})), name="catalog_table")
            if not isinstance(catalog, str):
                self.fill_catalog_table(catalog)
        # Without a ranking loss the head is not trained, and its L2 penalty must not move it either.
        head = dict(cross_layers=config.cross_layers, hidden_units=config.ranking_hidden_units,
                    dropout=config.ranking_dropout, l2=config.ranking_l2 if config.ranking_weight > 0 else 0.0,
                    calibration=config.ranking_calibration, name="ranking_head")
        self.ranking_head = (MultiTaskRankingHead(config.ranking_objectives, config.ranking_experts,
                                                  config.ranking_gates, **head) if config.watch else RankingHead(**head))
        # The served score's expected watch is in seconds when the videos have a duration (`encode_videos`).
        self.watch_in_seconds = config.watch and "duration_s" in self.candidate_tower.input_names
        self.target_attention = None
        if config.ranking_target_attention and v.history_length:
            self.target_attention = TargetAttention(name="target_attention")
        self.user_click_counts = self.video_click_counts = None
        if config.ranking_count_features and v.user_impressions is not None:
            self.user_click_counts = ClickCounts(v.user_impressions, v.user_clicks, config.user_oov_buckets,
                                                 v.click_rate, v.user_prior_strength, name="user_click_counts")
            self.video_click_counts = ClickCounts(v.video_counts, v.video_clicks, config.video_oov_buckets,
                                                  v.click_rate, v.video_prior_strength, name="video_click_counts")
        self.list_blend = ListBlend(name="list_blend") if config.list_blend else None
        self._count_rng = tf.random.Generator.from_seed(config.seed + 7)
        # What train_step updates: "both" (joint training) or "ranking" (the ranking head alone on frozen
        # towers; see tfrec_video.training.head_selection). Read when the train function is traced.
        self.trained_heads = "both"
        # The tasks and loss trackers are float32 whatever the global policy: a mixed_float16 layer casts
        # its first input to float16, and the retrieval softmax and the losses must stay float32.
        with dtype_policy("float32"):
            self.retrieval_task = tfrs.tasks.Retrieval(
                loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
                temperature=config.temperature, remove_accidental_hits=config.remove_accidental_hits)
            # Losses under tf.distribute must not average on their own (Keras refuses SUM_OVER_BATCH_SIZE there):
            # both tasks sum, and compute_loss divides by the replica's rows.
            self.ranking_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
                metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc"),
                         tf.keras.metrics.BinaryCrossentropy(from_logits=True, name="logloss")])
            self.retrieval_loss_tracker = tf.keras.metrics.Mean(name="retrieval_loss")
            self.ranking_loss_tracker = tf.keras.metrics.Mean(name="ranking_loss")
            self.watch_loss_tracker = tf.keras.metrics.Mean(name="watch_loss") if config.watch else None
            # Epoch means of what train_step logs (TFRS logs the last batch's values instead).
            self.loss_tracker = tf.keras.metrics.Mean(name="loss")
            self.regularization_loss_tracker = tf.keras.metrics.Mean(name="regularization_loss")
            self.total_loss_tracker = tf.keras.metrics.Mean(name="total_loss")
        # Every logged value is a metric, aggregated over all replicas and workers when it is read;
        # Keras's default ("auto": the sum of what each replica returns) would add them up again,
        # e.g. log an AUC of 1.8 on two workers.
        self.distribute_reduction_method = "first"
        # Sampling probability by lookup index [mask, OOV..., vocabulary...]; unseen videos are rare: the smallest.
        probs = vocabularies.candidate_sampling_probabilities()
        floor = float(probs[probs > 0].min()) if (probs > 0).any() else 1.0  # >0: counts of one window
        table = np.concatenate([np.full(1 + config.video_oov_buckets, floor, np.float32), probs])
        self._sampling_probability = tf.constant(table, tf.float32)
        # The served order's popularity (`ListBlend`): an unseen video's (or a count of 0) is unknown, not the
        # smallest, so it is the median's. With the floor the blend put every new video last: none was served.
        popularity = vocabularies.popularity()
        known = popularity > 0
        typical = float(np.median(np.log(popularity[known]))) if known.any() else 0.0
        log_pop = np.where(known, np.log(np.where(known, popularity, 1.0)), typical).astype(np.float32)
        self._log_popularity = tf.constant(
            np.concatenate([np.full(1 + config.video_oov_buckets, typical, np.float32), log_pop]), tf.float32)

    # -- stages ---------------------------------------------------------------------------------
    @property
    def query_feature_names(self):
        return self.query_tower.input_names

    @property
    def video_feature_names(self):
        return self.candidate_tower.input_names

    @property
    def content_columns(self):
        """`CatalogTable` column specs of the video features other than `video_id`."""
        v = self.vocabularies
        dims = {"image_embedding": v.image_dim, "audio_embedding": v.audio_dim,
                "title_embedding": v.title_embedding_dim}
        return {name: (_CONTENT_DTYPES[name], [dims[name]] if dims.get(name) else [])
                for name in self.video_feature_names if name != "video_id"}

    def embed_queries(self, features: Mapping[str, tf.Tensor], training=None,
                      catalog_embeddings: Optional[tf.Tensor] = None) -> tf.Tensor:
        """L2-normalised query embeddings `[batch, embedding_dim]` (`catalog_embeddings`: `encode_queries`)."""
        # Through __call__ (not encode/project) so Keras marks the tower built and saves it whole.
        history = self._history_embeddings(features, training=training, catalog_embeddings=catalog_embeddings)
        return self.query_tower(features, training=training, history_embeddings=history)

    def embed_videos(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """L2-normalised video embeddings `[batch, embedding_dim]`."""
        return self.candidate_tower(features, training=training)

    def _history_embeddings(self, features, training=None, catalog_embeddings=None):
        """Candidate-tower embeddings `[batch, length, dim]` of the watched videos, or None when history
        is pooled over id embeddings (no catalog table). `catalog_embeddings`: see `CatalogTable.embed`."""
        if self.catalog_table is None:
            return None
        history = features["history"]
        # Each distinct video is encoded once per batch: histories overlap heavily.
        unique_ids, position = tf.unique(tf.reshape(history, [-1]))
        embedded = self.catalog_table.embed(
            unique_ids, lambda content: self.candidate_tower(content, training=training), catalog_embeddings)
        shape = tf.concat([tf.shape(history), [self.config.embedding_dim]], axis=0)
        return tf.reshape(tf.gather(embedded, position), shape)

    def encode_queries(self, features: Mapping[str, tf.Tensor], training=None,
                       catalog_embeddings: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
        """What the two stages need of users: `encoding` (the ranking head's user features), `embedding`
        (the retrieval query), and, when the ranking head uses them, the watched videos' embeddings
        (`history`, `history_mask`) and the user's count row (`user_index`). `catalog_embeddings`
        (serving): `embed_catalog_table()`, watched videos gathered from it (`CatalogTable.embed`)."""
        history = self._history_embeddings(features, training=training, catalog_embeddings=catalog_embeddings)
        encoding = self.query_tower.encode(features, training=training, history_embeddings=history)
        query = {"encoding": encoding, "embedding": self.query_tower.project(encoding, training=training)}
        if self.target_attention is not None:
            ids = features["history"]
            query["history"] = history if history is not None else self.video_embedding(ids, training=training)
            query["history_mask"] = tf.not_equal(ids, "")
        if self.user_click_counts is not None:
            query["user_index"] = self._count_index(self.query_tower.user_embedding.lookup(features["user_id"]),
                                                    self.config.user_id_dropout, training)
        return query

    def encode_videos(self, features: Mapping[str, tf.Tensor], training=None, video_index=None,
                      popularity: bool = True) -> Dict[str, tf.Tensor]:
        """What the two stages need of videos: `encoding` and `embedding`, the target the watched videos
        are compared with (`target`, only when it is not `embedding`), the video's count row
        (`video_index`) and, with a `ListBlend`, `log_popularity`. Serving precomputes all but
        `embedding` for the whole catalog, so ranking the retrieved candidates needs no tokenizer or CNN
        per request. `video_index` is `self.video_embedding.lookup(features["video_id"])` when the
        caller has it; `popularity=False` skips `log_popularity` and a watch model's `log_duration` (only
        the served order reads them)."""
        encoding = self.candidate_tower.encode(features, training=training)
        video = {"encoding": encoding, "embedding": self.candidate_tower.project(encoding, training=training)}
        if self.target_attention is not None and self.catalog_table is None:
            # Without history content the watched videos are id embeddings: compare them with the candidate's.
            video["target"] = self.video_embedding(features["video_id"], training=training)
        blend = popularity and self.list_blend is not None
        if video_index is None and (self.video_click_counts is not None or blend):
            video_index = self.video_embedding.lookup(features["video_id"])
        if self.video_click_counts is not None:
            video["video_index"] = self._count_index(video_index, self.config.video_id_dropout, training)
        if blend:
            video["log_popularity"] = tf.gather(self._log_popularity, video_index)
        if popularity and self.watch_in_seconds:
            # What turns the expected watched fraction into expected seconds (a duration under 1 s counts as 1).
            seconds = tf.cast(tf.reshape(features["duration_s"], [-1]), tf.float32)
            video["log_duration"] = tf.math.log(tf.clip_by_value(
                tf.where(tf.math.is_finite(seconds), seconds, 1.0), 1.0, 1e7))
        return video

    def _count_index(self, index, dropout, training):
        """Count rows `index` (an id layer's lookup); in training, ids are hidden with the id dropout's rate
        (row 0: no counts), so the ranking head also learns users and videos it has no counts for."""
        if training and dropout > 0:
            index = tf.where(self._count_rng.uniform(tf.shape(index)) < dropout, tf.zeros_like(index), index)
        return index

    def rank_logits_from_parts(self, query: Mapping[str, tf.Tensor], video: Mapping[str, tf.Tensor], training=None,
                               clicked: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Click logits `[batch]` (float32) from `encode_queries` and `encode_videos` outputs, row by row."""
        return self.rank_outputs_from_parts(query, video, training=training, clicked=clicked)["click"]

    def rank_outputs_from_parts(self, query: Mapping[str, tf.Tensor], video: Mapping[str, tf.Tensor], training=None,
                                clicked: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
        """The ranking head's logits by objective (`click`, and `watch` for a watch model), each `[batch]`
        float32, from `encode_queries` and `encode_videos` outputs, row by row.

        `clicked` (training only) takes each row's own click out of the count features. `video` may hold
        the target attention's output (`attention`) when the caller computed it per user (serving)."""
        dtype = self.ranking_head.compute_dtype  # the encodings' dtype; the embeddings are float32
        product = query["embedding"] * video["embedding"]
        # The retrieval score itself, not only its terms: an MLP sums 64 products only roughly, and the
        # fine order among retrieved candidates rests on it.
        parts = [query["encoding"], video["encoding"], product, tf.reduce_sum(product, axis=-1, keepdims=True)]
        if self.target_attention is not None:
            parts.append(video["attention"] if "attention" in video else self.target_attention(
                query["history"], query["history_mask"], video.get("target", video["embedding"])))
        if self.user_click_counts is not None:
            parts.append(self.user_click_counts(query["user_index"], clicked=clicked))
            parts.append(self.video_click_counts(video["video_index"], clicked=clicked))
        logits = self.ranking_head(tf.concat([tf.cast(part, dtype) for part in parts], axis=-1), training=training)
        return logits if isinstance(logits, dict) else {"click": logits}

    @property
    def ranking_variables(self):
        """The trainable variables only the ranking stage uses (the head and the target attention)."""
        layers = [self.ranking_head] + ([self.target_attention] if self.target_attention is not None else [])
        return [variable for layer in layers for variable in layer.trainable_variables]

    @property
    def watch_variables(self):
        """The trainable variables only the watch head uses (its tower, gate and own experts)."""
        return self.ranking_head.objective_variables("watch") if self.config.watch else []

    def _forward(self, features, training=None, clicked=None, towers_training=None, video_index=None):
        towers_training = training if towers_training is None else towers_training
        query = self.encode_queries(features, training=towers_training)
        video = self.encode_videos(features, training=towers_training, video_index=video_index, popularity=False)
        logits = self.rank_outputs_from_parts(query, video, training=training, clicked=clicked)
        return query["embedding"], video["embedding"], logits

    def rank_logits(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """Click logits `[batch]` for the (user, video) pairs in `features`."""
        return self.rank_outputs(features, training=training)["click"]

    def rank_outputs(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        """Every ranking head's logits `[batch]` (`click`, and a watch model's `watch`) for the pairs in `features`."""
        return self._forward(features, training=training)[2]

    def call(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        q, c, logits = self._forward(features, training=training)
        outputs = {"query_embedding": q, "video_embedding": c, "retrieval_score": tf.reduce_sum(q * c, axis=-1),
                   "click_probability": tf.sigmoid(logits["click"])}
        if "watch" in logits:
            outputs["expected_watch_fraction"] = tf.sigmoid(logits["watch"])
        return outputs

    # -- training ---------------------------------------------------------------------------------
    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        if isinstance(inputs, tuple):  # (features, labels) from Keras-style datasets
            features = dict(inputs[0])
            if len(inputs) > 1 and inputs[1] is not None:
                features["clicked"] = inputs[1]
        else:
            features = inputs
        clicked = tf.reshape(tf.cast(features["clicked"], tf.float32), [-1])
        # Training the ranking head alone: the towers run as at inference (no dropout), and only the
        # ranking loss is computed.
        ranking_only = bool(training) and self.trained_heads in ("ranking", "watch")
        logq = self.config.retrieval_weight > 0 and not ranking_only and self.config.logq_correction
        # One lookup of the batch's videos serves the count features and the logQ correction.
        index = self.video_embedding.lookup(features["video_id"]) if logq else None
        # In training the rows are the ones adapt counted: their own clicks leave their count features.
        q, c, logits = self._forward(features, training=training, clicked=clicked if training else None,
                                     towers_training=False if ranking_only else training, video_index=index)
        loss = tf.constant(0.0)
        if self.config.retrieval_weight > 0 and not ranking_only:
            sampling = None
            if logq:
                sampling = tf.gather(self._sampling_probability, index)
                if self.config.logq_weight != 1.0:
                    sampling = tf.pow(sampling, self.config.logq_weight)
            # Retrieval creates its logQ and accidental-hit layers while it runs, with the global policy
            # of that moment: float32, so that scores, softmax and loss stay float32.
            with dtype_policy("float32"):
                summed = self.retrieval_task(
                    q, c, sample_weight=clicked, candidate_sampling_probability=sampling,
                    candidate_ids=features["video_id"], compute_metrics=False, compute_batch_metrics=False)
            retrieval_loss = summed / tf.maximum(tf.reduce_sum(clicked), 1.0)
            self.retrieval_loss_tracker.update_state(retrieval_loss)
            loss += self.config.retrieval_weight * retrieval_loss
        watch_only = bool(training) and self.trained_heads == "watch"
        if (self.config.ranking_weight > 0 or ranking_only) and not watch_only:
            # [rows, 1]: one loss per row, summed, then divided by the rows (0 for a replica left without any).
            ranking_loss = self.ranking_task(labels=clicked[:, None], predictions=logits["click"][:, None]) / tf.maximum(
                tf.cast(tf.size(clicked), tf.float32), 1.0)
            self.ranking_loss_tracker.update_state(ranking_loss)
            loss += (1.0 if ranking_only else self.config.ranking_weight) * ranking_loss
        if "watch" in logits and (self.config.ranking_weight > 0 or ranking_only):
            watch_loss = watch_fraction_loss(features, clicked, logits["watch"])
            self.watch_loss_tracker.update_state(watch_loss)
            loss += (1.0 if watch_only else self.config.ranking_weight * self.config.watch_loss_weight) * watch_loss
        return loss

    # -- serialisation ----------------------------------------------------------------------------
    def get_config(self):
        return {"config": self.given_config.to_dict(), "vocabularies": self.vocabularies.to_dict(),
                "prepared_catalog": self.prepared_catalog}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(ModelConfig.from_dict(config["config"]), Vocabularies.from_dict(config["vocabularies"]),
                   catalog=CATALOG_FROM_WEIGHTS, prepared_catalog=config.get("prepared_catalog", False))
