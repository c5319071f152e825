"""`IdEmbedding`: string ids to vectors, with hashed OOV buckets and id dropout.

Unseen ids (a new user, a video published after training) are hashed into
`num_oov_buckets` rows rather than one shared OOV row, so that different unknown
ids do not all collapse onto one vector. The empty string is the mask token
(id 0) and embeds to zeros-by-masking in poolings; it is what serving pads
`history` with.

`dropout` replaces a known id by its OOV bucket with that probability during
training. OOV rows then learn to stand for "a video we know only by its
content", which is exactly the situation of a cold-start video at serving time.

Example:

>>> import tensorflow as tf
>>> layer = IdEmbedding(["a", "b"], embedding_dim=4, num_oov_buckets=3)
>>> layer(tf.constant(["a", "never-seen", ""])).shape
TensorShape([3, 4])
>>> layer.lookup(tf.constant(["", "a"])).numpy().tolist()  # 0 is the mask, 1..3 OOV, then vocab
[0, 4]
"""

import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.towers.untracked import untracked


class IdEmbedding(tf.keras.layers.Layer):
    """Embeds string ids; unknown ids share hashed OOV buckets.

    Args:
      vocabulary: known ids; each owns a row.
      embedding_dim: output width.
      num_oov_buckets: hashed rows for unknown ids (at least 1).
      dropout: probability of replacing a known id by its OOV bucket in training.
      seed: seed of the dropout draw.
    """

    def __init__(self, vocabulary: Sequence[str], embedding_dim: int, num_oov_buckets: int = 8,
                 dropout: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if embedding_dim <= 0:
            raise ValueError(f"IdEmbedding {self.name}: embedding_dim must be positive, got {embedding_dim}.")
        if num_oov_buckets < 1:
            raise ValueError(f"IdEmbedding {self.name}: num_oov_buckets must be >= 1, got {num_oov_buckets}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"IdEmbedding {self.name}: dropout must be in [0, 1), got {dropout}.")
        self.vocabulary = untracked([str(v) for v in vocabulary])
        self.embedding_dim = int(embedding_dim)
        self.num_oov_buckets = int(num_oov_buckets)
        self.dropout = float(dropout)
        self.seed = int(seed)
        self._lookup = tf.keras.layers.StringLookup(
            # An array, not the list: StringLookup keeps its input, and a list would be tracked.
            vocabulary=np.asarray(self.vocabulary, object) if self.vocabulary else None, mask_token="",
            num_oov_indices=self.num_oov_buckets,
        )
        self.vocabulary_size = 1 + self.num_oov_buckets + len(self.vocabulary)
        self._embedding = tf.keras.layers.Embedding(self.vocabulary_size, self.embedding_dim)
        # Mix the layer name into the seed: the user and video layers must not drop the same rows.
        self._rng = tf.random.Generator.from_seed(self.seed + zlib.crc32(self.name.encode("utf-8")))

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """Row index of each id: 0 for "", 1..num_oov_buckets for unknown ids."""
        return self._lookup(ids)

    def oov_index(self, ids: tf.Tensor) -> tf.Tensor:
        """The OOV bucket an id would hash to if it were unknown."""
        bucket = tf.strings.to_hash_bucket_fast(ids, self.num_oov_buckets)
        return tf.where(tf.equal(ids, ""), tf.zeros_like(bucket), 1 + bucket)

    def call(self, ids: tf.Tensor, training=None) -> tf.Tensor:
        index = self.lookup(ids)
        if training and self.dropout > 0.0:
            drop = self._rng.uniform(tf.shape(index)) < self.dropout
            index = tf.where(drop & (index > self.num_oov_buckets), self.oov_index(ids), index)
        return self._embedding(index)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, embedding_dim=self.embedding_dim,
                      num_oov_buckets=self.num_oov_buckets, dropout=self.dropout, seed=self.seed)
        return config
