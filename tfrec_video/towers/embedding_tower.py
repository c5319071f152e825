"""`EmbeddingTower`: what the query and candidate towers have in common.

A tower `encode`s its raw features into one concatenated vector (the ranking
head reads this), then `project`s it through its MLP onto the unit sphere (the
retrieval space). Subclasses implement `encode`, create `self.mlp`, and record
their constructor arguments in `self._config`, with the shared video
`IdEmbedding` under `"video_embedding"` so that `from_config` can rebuild it.
"""

import tensorflow as tf

from tfrec_video.towers.id_embedding import IdEmbedding


class EmbeddingTower(tf.keras.layers.Layer):
    """Base of `QueryTower` and `CandidateTower`: `encode`, then `project`."""

    def encode(self, features, training=None) -> tf.Tensor:
        raise NotImplementedError

    def project(self, encoded: tf.Tensor, training=None) -> tf.Tensor:
        """MLP and L2 normalisation of `encode`'s output."""
        return tf.math.l2_normalize(self.mlp(encoded, training=training), axis=-1)

    def call(self, features, training=None, **encode_kwargs):
        return self.project(self.encode(features, training=training, **encode_kwargs), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config

    @classmethod
    def from_config(cls, config):
        # A tower restored on its own owns its video embedding; VideoRecModel.from_config
        # rebuilds the sharing between its two towers.
        config = dict(config)
        config["video_embedding"] = IdEmbedding.from_config(config["video_embedding"])
        return cls(**config)
