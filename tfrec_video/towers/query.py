"""`QueryTower`: raw user features to an L2-normalised query embedding.

    user_id ──IdEmbedding (hashed OOV buckets)──────────────┐
    history ──shared video IdEmbedding──HistoryPooling──────┤
    hour    ──Embedding(24)─────────────────────────────────┼─concat─► MLP ─► L2 normalise
    device  ──IdEmbedding────────────────────────────────────┘

Each input except `user_id` is optional: the tower builds only what its
`Vocabularies` say the data has. `encode` returns the concatenated features
before the MLP; the ranking head reuses them, so both stages train the same
embeddings.

Example:

>>> import tensorflow as tf
>>> videos = IdEmbedding(["v1", "v2"], embedding_dim=8)
>>> tower = QueryTower(["u1"], videos, history_length=2, has_hour=True, devices=["tv"],
...                    hidden_units=(16,), output_dim=4)
>>> q = tower({"user_id": tf.constant(["u1", "new"]), "history": tf.constant([["v1", ""], ["", ""]]),
...            "hour": tf.constant([3, 23], tf.int64), "device": tf.constant(["tv", "phone"])})
>>> q.shape, bool(abs(float(tf.norm(q[0])) - 1.0) < 1e-5)
(TensorShape([2, 4]), True)
"""

from typing import Mapping, Optional, Sequence

import tensorflow as tf

from tfrec_video.towers.history_pooling import HistoryPooling
from tfrec_video.towers.embedding_tower import EmbeddingTower
from tfrec_video.towers.id_embedding import IdEmbedding
from tfrec_video.towers.mlp import MLP
from tfrec_video.towers.untracked import untracked


class QueryTower(EmbeddingTower):
    """Embeds users (see module docstring).

    Args:
      user_ids: user vocabulary.
      video_embedding: the video `IdEmbedding` shared with the candidate tower,
        used to embed `history`.
      history_length: length of `history`, or None when there is no history.
      history_pooling: `"mean"` or `"attention"`.
      has_hour: whether `hour` (0-23) is an input.
      devices: device vocabulary, or None when there is no `device` input.
      id_dim: width of the user-id embedding.
      num_oov_buckets: hashed rows for unseen users.
      user_id_dropout: probability of hiding a known user id behind its OOV bucket in training.
      hidden_units: MLP widths.
      output_dim: the embedding width.
      dropout: MLP dropout.
    """

    def __init__(self, user_ids: Sequence[str], video_embedding: IdEmbedding, history_length: Optional[int] = None,
                 history_pooling: str = "mean", has_hour: bool = False, devices: Optional[Sequence[str]] = None,
                 id_dim: int = 32, num_oov_buckets: int = 64, user_id_dropout: float = 0.0, hidden_units: Sequence[int] = (128,),
                 output_dim: int = 64, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.history_length = history_length
        self.has_hour = bool(has_hour)
        self.user_embedding = IdEmbedding(user_ids, id_dim, num_oov_buckets, dropout=user_id_dropout, name="user_id")
        self.video_embedding = video_embedding
        self.history_pooling = HistoryPooling(history_pooling, name="history_pooling") if history_length else None
        self.hour_embedding = tf.keras.layers.Embedding(25, 8, name="hour") if has_hour else None
        self.device_embedding = IdEmbedding(devices, 8, 2, name="device") if devices else None
        self.mlp = MLP(hidden_units, output_dim, dropout, name="mlp")
        self._config = untracked(dict(user_ids=list(map(str, user_ids)), video_embedding=video_embedding.get_config(),
                            history_length=history_length, history_pooling=history_pooling, has_hour=self.has_hour,
                            devices=None if devices is None else list(devices), id_dim=id_dim,
                            num_oov_buckets=num_oov_buckets, user_id_dropout=user_id_dropout, hidden_units=list(hidden_units),
                            output_dim=output_dim, dropout=dropout))

    @property
    def input_names(self):
        names = ["user_id"]
        if self.history_pooling is not None:
            names.append("history")
        if self.has_hour:
            names.append("hour")
        if self.device_embedding is not None:
            names.append("device")
        return names

    def encode(self, features: Mapping[str, tf.Tensor], training=None,
               history_embeddings: Optional[tf.Tensor] = None) -> tf.Tensor:
        """The concatenated user features, before the MLP.

        Args:
          features: raw user features.
          training: Keras training flag.
          history_embeddings: optional `[batch, history_length, dim]` embeddings of
            the `history` entries. `VideoRecModel` passes the candidate tower's
            embeddings of the watched videos (their content); without it the
            entries are embedded with the shared video-id embedding.
        """
        user = self.user_embedding(features["user_id"], training=training)
        parts = [user]
        if self.history_pooling is not None:
            history = features["history"]
            if history_embeddings is None:
                history_embeddings = self.video_embedding(history, training=training)
            parts.append(self.history_pooling(history_embeddings, history, context=user))
        if self.has_hour:
            # Out-of-range hours go to row 24 rather than failing at serving time.
            hour = tf.cast(features["hour"], tf.int64)
            hour = tf.where((hour >= 0) & (hour < 24), hour, tf.constant(24, tf.int64))
            parts.append(self.hour_embedding(hour))
        if self.device_embedding is not None:
            parts.append(self.device_embedding(features["device"]))
        return self._concat(parts)
