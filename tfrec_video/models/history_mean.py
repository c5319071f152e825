"""`HistoryMeanTwoTower`: the plain two-tower that knows a user only by what they watched.

    history  ──StringLookup──► Embedding ──► mean over the watched videos ──► q
    video_id ──StringLookup──► Embedding (the same table) ───────────────► c
    tfrs.tasks.Retrieval(q, c): in-batch softmax over the batch's videos

The user is the average of the id embeddings of the videos in their `history`;
there is no user id, no content, no context. It is the strongest plain baseline
on sparse data, where a user has a handful of events: a user-id embedding
memorises those few events, an average of video embeddings generalises to every
user with a history, new users included. `report.json` puts its
`history_mean_hr@K` beside the model's in the `leave_one_out` section (and its
`history_mean_recall@K` in the impression sections), so the model has to beat
a well-tuned simple answer, not only the ID-only one
(`tfrec_video.models.id_only`).

A user with an empty history gets the zero vector: every video scores 0, and
the evaluator's pessimistic ties rank the true video last. Cold videos share
the one OOV row, as in the ID-only baseline.

`fit_history_mean_baseline` trains it on the clicked training impressions and,
given validation impressions, keeps the epoch with the best leave-one-out HR@10
on them (the validation users' last clicks, their history left out), so its
training length is tuned on held-out data as ours is.

Example:

>>> import numpy as np, tensorflow as tf
>>> clicks = {"history": np.array([["a", ""], ["a", "b"]], object), "video_id": np.array(["b", "c"], object)}
>>> model = HistoryMeanTwoTower(video_ids=["a", "b", "c"], embedding_dim=8)
>>> model.compile(tf.keras.optimizers.Adam(0.01))
>>> _ = model.fit(tf.data.Dataset.from_tensor_slices(clicks).batch(2), epochs=1, verbose=0)
>>> model.embed_queries({"history": tf.constant([["a", "b"], ["", ""]])}).shape
TensorShape([2, 8])
"""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_video.data.schema import TableSchema
from tfrec_video.models.id_only import check_training_settings, read_clicks


class HistoryMeanTwoTower(tfrs.Model):
    """Mean of the watched videos' id embeddings against the video-id embedding (see module docstring).

    Args:
      video_ids: video ids with an embedding row each; any other id shares the OOV row,
        and `""` (history padding) is masked out of the mean.
      embedding_dim: width of the embedding.
      seed: seed of the embedding initialiser.
    """

    query_feature_names = ("history",)
    video_feature_names = ("video_id",)

    def __init__(self, video_ids: Sequence[str], embedding_dim: int = 32, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.video_ids = [str(v) for v in video_ids]
        if not self.video_ids:
            raise ValueError("HistoryMeanTwoTower: needs at least one video id.")
        if not isinstance(embedding_dim, int) or isinstance(embedding_dim, bool) or embedding_dim <= 0:
            raise ValueError(f"HistoryMeanTwoTower: embedding_dim must be a positive integer, got {embedding_dim!r}.")
        self.embedding_dim = int(embedding_dim)
        self.seed = int(seed)
        # mask_token "": the history's padding is index 0 and is left out of the mean; OOV is index 1.
        self.lookup = tf.keras.layers.StringLookup(vocabulary=self.video_ids, mask_token="", num_oov_indices=1,
                                                   name="video_lookup")
        self.embedding = tf.keras.layers.Embedding(
            len(self.video_ids) + 2, self.embedding_dim, name="video_embedding",
            embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=self.seed))
        self.task = tfrs.tasks.Retrieval()

    def embed_queries(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """The mean of the `history` videos' embeddings `[batch, embedding_dim]` (zeros for an empty history)."""
        history = tf.convert_to_tensor(features["history"])
        index = self.lookup(history)
        mask = tf.cast(tf.not_equal(index, 0), tf.float32)[..., None]
        total = tf.reduce_sum(self.embedding(index) * mask, axis=-2)
        return total / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)

    def embed_videos(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """Video embeddings `[batch, embedding_dim]`; every unknown id gets the same (OOV) vector."""
        return self.embedding(self.lookup(features["video_id"]))

    def call(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        q = self.embed_queries(features, training=training)
        c = self.embed_videos(features, training=training)
        return {"query_embedding": q, "video_embedding": c, "retrieval_score": tf.reduce_sum(q * c, axis=-1)}

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        if isinstance(features, tuple):
            features = features[0]
        return self.task(self.embed_queries(features, training=training),
                         self.embed_videos(features, training=training), compute_metrics=False)

    def get_config(self):
        return {"video_ids": list(self.video_ids), "embedding_dim": self.embedding_dim, "seed": self.seed}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def fit_history_mean_baseline(
    train_paths,
    impressions_schema: TableSchema,
    validation_paths=None,
    embedding_dim: int = 32,
    max_epochs: int = 10,
    patience: int = 2,
    batch_size: int = 2048,
    learning_rate: float = 0.003,
    seed: int = 0,
    validate: bool = True,
) -> HistoryMeanTwoTower:
    """Trains `HistoryMeanTwoTower` on the clicked rows of training impressions files.

    The vocabulary is every video id of the training impressions (clicked, shown
    or watched in a history), sorted. With `validation_paths`, training runs up
    to `max_epochs` and returns the weights of the epoch with the best
    leave-one-out HR@10 on the validation users' last clicks (stopping after
    `patience` epochs without improvement); without them, `max_epochs` epochs.

    The defaults (Adam 0.003, batch 2048, dimension 32) were the best of a small
    grid on the validation split of `BuiltinConfig.sparse()` (leave-one-out
    HR@10 there, the best epoch of up to 15): 0.102 against 0.100 (0.001, batch
    512), 0.095 (0.001, batch 128, dimension 64), 0.086 (0.003, batch 512), 0.061
    (0.003, batch 128) and 0.029 (0.01, batch 512). Every setting peaked after
    one epoch: the id embeddings of a few clicks each overfit fast.

    Args:
      train_paths: training impressions files (any format `read_table` reads).
      impressions_schema: their schema.
      validation_paths: optional validation impressions, for the epoch choice.
      embedding_dim: width of the embedding.
      max_epochs: the most passes over the training clicks.
      patience: epochs without a better validation HR@10 before stopping.
      batch_size: clicks per step; also the number of in-batch negatives.
      learning_rate: Adam learning rate.
      seed: seeds the initialiser, the shuffling and TF's global generator.
      validate: validate every row against the schema first.

    Returns:
      The trained model; its `best_epoch` (1-based) is the epoch whose weights it holds.

    Raises:
      ConfigError: a non-positive setting.
      DataValidationError: no clicked row to train on.
    """
    check_training_settings("fit_history_mean_baseline", learning_rate, embedding_dim=embedding_dim,
                            max_epochs=max_epochs, batch_size=batch_size, patience=patience)
    from tfrec_video.data.tables import read_table
    from tfrec_video.evaluation.leave_one_out import leave_one_out_events, leave_one_out_metrics

    tf.keras.utils.set_random_seed(seed)
    seen, clicks = read_clicks(train_paths, impressions_schema, ("video_id", "history"), validate,
                               "the history-mean")
    videos = seen["video_id"] | seen["history"]
    vocabulary = sorted(videos - {""})
    model = HistoryMeanTwoTower(vocabulary, embedding_dim=embedding_dim, seed=seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    data = (tf.data.Dataset.from_tensor_slices(clicks)
            .shuffle(len(clicks["video_id"]), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size))
    if validation_paths is None:
        model.fit(data, epochs=max_epochs, verbose=0)
        model.best_epoch = max_epochs
        return model
    events = leave_one_out_events(read_table(validation_paths, impressions_schema, validate=validate), ["history"])
    catalog = {"video_id": np.array(vocabulary, object)}
    best: Optional[tuple] = None
    waited = 0
    for epoch in range(max_epochs):
        model.fit(data, epochs=1, verbose=0)
        score = leave_one_out_metrics(model, catalog, events, vocabulary, ks=(10,))["hr@10"]
        if best is None or score > best[0]:
            best, waited = (score, epoch, model.get_weights()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best[2])
    model.best_epoch = best[1] + 1
    return model
