"""`RankingHead`: user and video features to one click logit, through a DCN cross network.

    [query features | video features | query ⊙ video] ──Cross × n──► MLP ──► Dense(1) = logit

The inputs are the towers' pre-MLP encodings (ids, pooled history, context, the
CNN title encoding, the projected image and audio embeddings, category, duration)
plus the element-wise product of the two retrieval embeddings, so ranking and
retrieval share, and jointly train, every embedding. `tfrs.layers.dcn.Cross`
learns explicit feature crosses (user topic × video topic) that an MLP finds only
slowly.

The logit is float32 even under a mixed-precision policy (the last layer has a
float32 dtype policy): it feeds the sigmoid cross-entropy and the served
`click_probability`, where float16's 3 significant digits and its range would
show. The cross layers and the MLP's hidden layers compute in the policy's dtype.

Example:

>>> import tensorflow as tf
>>> RankingHead(cross_layers=1, hidden_units=(8,))(tf.ones([2, 5])).shape
TensorShape([2])
"""

from typing import Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_video.towers.mlp import MLP


class RankingHead(tf.keras.layers.Layer):
    """Cross layers, an MLP and a single logit.

    Args:
      cross_layers: number of `tfrs.layers.dcn.Cross` layers (0 for a plain MLP).
      hidden_units: MLP widths.
    """

    def __init__(self, cross_layers: int = 1, hidden_units: Sequence[int] = (128, 64), **kwargs):
        super().__init__(**kwargs)
        self.cross_layers = int(cross_layers)
        self.hidden_units = [int(u) for u in hidden_units]
        self.normalization = tf.keras.layers.LayerNormalization(name="input_norm")
        self.crosses = [tfrs.layers.dcn.Cross(name=f"cross_{i}") for i in range(self.cross_layers)]
        self.mlp = MLP(self.hidden_units, output_dim=1, output_dtype="float32", name="mlp")

    def call(self, x, training=None):
        x0 = self.normalization(x)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return tf.squeeze(self.mlp(x, training=training), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(cross_layers=self.cross_layers, hidden_units=self.hidden_units)
        return config
