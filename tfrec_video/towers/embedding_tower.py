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
    """Base of `QueryTower` and `CandidateTower`: `encode`, then `project`.

    Under a mixed-precision policy (`mixed_float16`) a tower's layers compute in
    float16, but its inputs are not cast on the way in (`autocast=False`): each
    raw feature is cast by the layer that reads it, because some do not fit in
    float16 (a duration of 20 hours is 72,000 seconds, above float16's 65,504).
    `encode` returns the compute dtype; `project` returns float32 embeddings,
    normalised in float32, so retrieval scores and their softmax stay float32.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def encode(self, features, training=None) -> tf.Tensor:
        raise NotImplementedError

    def _concat(self, parts) -> tf.Tensor:
        """`encode`'s parts side by side, in the compute dtype (some are computed in float32)."""
        return tf.concat([tf.cast(part, self.compute_dtype) for part in parts], axis=-1)

    def project(self, encoded: tf.Tensor, training=None) -> tf.Tensor:
        """MLP and L2 normalisation of `encode`'s output, as float32."""
        return tf.math.l2_normalize(tf.cast(self.mlp(encoded, training=training), tf.float32), axis=-1)

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
