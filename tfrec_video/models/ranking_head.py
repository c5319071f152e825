"""`RankingHead`: user and video features to one click logit, through a DCN cross network.

    [query features | video features | query ⊙ video | target attention | counts]
        ──LayerNorm──Cross × n──► MLP (dropout, L2) ──► Dense(1) ──► scale · z + bias = logit

The inputs are the towers' pre-MLP encodings (ids, pooled history, context, the
CNN title encoding, the projected image and audio embeddings, category, duration)
plus the element-wise product of the two retrieval embeddings, so ranking and
retrieval share, and jointly train, every embedding; and, from `VideoRecModel`,
the candidate's attention over the watched videos (`TargetAttention`) and the
user's and video's click counts (`ClickCounts`). Dropout after each hidden layer
and an L2 penalty on every kernel keep the head from memorising the training
impressions: it converges in a few epochs, faster than retrieval.

The last step is Platt scaling: two non-trainable weights, the identity until
`set_calibration` is given the values `tfrec_video.training.calibration` fits on
validation data after training, so that the served `click_probability` is
calibrated (what fraction of videos shown with probability 0.2 are clicked: 20%). `tfrs.layers.dcn.Cross`
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
      dropout: dropout rate after each hidden layer of the MLP.
      l2: L2 penalty on the kernels of the cross layers and the MLP.
      calibration: end with the Platt-scaling weights (see module docstring).
    """

    def __init__(self, cross_layers: int = 1, hidden_units: Sequence[int] = (128, 64), dropout: float = 0.0,
                 l2: float = 0.0, calibration: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.cross_layers = int(cross_layers)
        self.hidden_units = [int(u) for u in hidden_units]
        self.dropout = float(dropout)
        self.l2 = float(l2)
        regularizer = tf.keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.normalization = tf.keras.layers.LayerNormalization(name="input_norm")
        self.crosses = [tfrs.layers.dcn.Cross(kernel_regularizer=regularizer, name=f"cross_{i}")
                        for i in range(self.cross_layers)]
        self._build_output()
        self.calibration = bool(calibration)
        if self.calibration:
            self.calibration_scale = self.add_weight("calibration_scale", shape=[], dtype=tf.float32,
                                                     initializer="ones", trainable=False,
                                                     experimental_autocast=False)
            self.calibration_bias = self.add_weight("calibration_bias", shape=[], dtype=tf.float32,
                                                    initializer="zeros", trainable=False,
                                                    experimental_autocast=False)

    def _build_output(self) -> None:
        """What follows the cross layers (a subclass with several heads builds its own)."""
        self.mlp = MLP(self.hidden_units, output_dim=1, dropout=self.dropout, output_dtype="float32", l2=self.l2,
                       name="mlp")

    def _output(self, x, training=None):
        """The raw click logit `[batch]` (float32) of the crossed features `x`."""
        return tf.squeeze(self.mlp(x, training=training), axis=-1)

    def calibrated(self, logit):
        """The Platt-scaled click logit (in float32, as the raw one, under mixed precision too)."""
        if not self.calibration:
            return logit
        return logit * self.calibration_scale + self.calibration_bias

    def crossed(self, x):
        """The normalised input through the cross layers: what the MLP (or the experts) read."""
        x0 = self.normalization(x)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return x

    def set_calibration(self, scale: float, bias: float) -> None:
        """Sets the Platt scaling: the head then returns `scale * z + bias` for its raw logit `z`.

        Raises:
          ValueError: a scale that is not positive, or a bias of 1,000 or more in size (no data
            calibrates to that: it would be a probability of exactly 0 or 1).
        """
        if not self.calibration:
            raise ValueError(f"RankingHead {self.name}: built without calibration weights.")
        if not (scale > 0 and abs(bias) < 1e3):
            raise ValueError(f"RankingHead {self.name}: need a positive scale and a finite bias, got {scale}, {bias}.")
        self.calibration_scale.assign(float(scale))
        self.calibration_bias.assign(float(bias))

    def call(self, x, training=None):
        return self.calibrated(self._output(self.crossed(x), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(cross_layers=self.cross_layers, hidden_units=self.hidden_units, dropout=self.dropout,
                      l2=self.l2, calibration=self.calibration)
        return config
