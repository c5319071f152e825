"""`ClickCounts`: an id's smoothed click rate and impression count, as ranking features.

How often a user clicks, and how often a video is clicked when shown, are the
strongest single signals of a click model, and the ones an id embedding learns
last (a user with six impressions gets six gradient steps). `adapt` counts them
over the training impressions; this layer holds the counts, indexed like
`IdEmbedding.lookup` (`[mask, OOV buckets..., vocabulary...]`), and turns an id's
row into two features:

    rate  = (clicks + s * p) / (impressions + s)       the click rate, shrunk to the prior p
    [ logit(rate) - logit(p),  log1p(impressions) / log1p(max impressions) ]

`p` is the training click rate and `s` the prior's strength, both learned by
`adapt` (empirical Bayes: `s` comes from how much the per-id rates vary beyond
binomial noise, so an id with a few impressions is pulled towards `p` exactly as
much as the data says). Unknown ids (OOV rows, the mask) have no counts: rate
`p`, impression count 0.

**No label leak.** A training row's own click is inside its user's and video's
counts. When the row's `clicked` label is passed (training), it is taken out
first (leave-one-out), so the model never learns to read a row's label from its
own count; at serving no label is passed and the counts are used as they are.

The counts are non-trainable weights of the model: they are saved with it,
exported in the SavedModel, and refreshed by adapting and training again.

Example:

>>> import tensorflow as tf
>>> counts = ClickCounts(impressions=[10, 2], clicks=[5, 0], num_oov_buckets=1, prior_rate=0.1,
...                      prior_strength=4.0)
>>> features = counts(tf.constant([2, 3, 1]))    # rows: first id, second id, an OOV bucket
>>> features.shape, round(float(features[2, 0]), 6)
(TensorShape([3, 2]), 0.0)
"""

import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.towers.untracked import untracked


class ClickCounts(tf.keras.layers.Layer):
    """Smoothed click rate and scaled impression count of lookup rows (see module docstring).

    Args:
      impressions: impressions of each vocabulary id, in vocabulary order.
      clicks: clicks of each vocabulary id.
      num_oov_buckets: OOV rows before the vocabulary in the lookup index.
      prior_rate: the click rate every id is shrunk towards (0 < p < 1).
      prior_strength: the prior's weight in impressions (> 0).
    """

    def __init__(self, impressions: Sequence[int], clicks: Sequence[int], num_oov_buckets: int,
                 prior_rate: float, prior_strength: float, **kwargs):
        # Counts past 2,048 are not exact in float16: under mixed precision the table and the
        # arithmetic stay float32, and only the two features are cast to the compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if len(impressions) != len(clicks):
            raise ValueError(f"ClickCounts {self.name}: {len(impressions)} impression counts but {len(clicks)} "
                             "click counts.")
        if not 0.0 < prior_rate < 1.0 or not prior_strength > 0:
            raise ValueError(f"ClickCounts {self.name}: need 0 < prior_rate < 1 and prior_strength > 0, got "
                             f"{prior_rate} and {prior_strength}.")
        self.impressions = untracked([int(n) for n in impressions])
        self.clicks = untracked([int(c) for c in clicks])
        self.num_oov_buckets = int(num_oov_buckets)
        self.prior_rate = float(prior_rate)
        self.prior_strength = float(prior_strength)
        pad = np.zeros(1 + self.num_oov_buckets, np.float32)
        self._tables = np.stack([np.concatenate([pad, np.asarray(self.impressions, np.float32)]),
                                 np.concatenate([pad, np.asarray(self.clicks, np.float32)])], axis=1)
        self._count_scale = 1.0 / math.log1p(max(max(self.impressions, default=0), 1))

    def build(self, input_shape):
        # Weights, not graph constants: a catalog of a million videos stays out of the GraphDef.
        self.table = self.add_weight("counts", shape=self._tables.shape, dtype=tf.float32, trainable=False,
                                     initializer=tf.constant_initializer(self._tables),
                                     experimental_autocast=False)
        super().build(input_shape)

    def call(self, index: tf.Tensor, clicked: Optional[tf.Tensor] = None) -> tf.Tensor:
        """`[batch, 2]` features of lookup rows `index`; `clicked` (training) takes each row's own click out."""
        counts = tf.gather(self.table, tf.reshape(index, [-1]))
        impressions, clicks = counts[:, 0], counts[:, 1]
        if clicked is not None:
            own = tf.cast(impressions > 0, tf.float32)
            impressions = tf.maximum(impressions - own, 0.0)
            clicks = tf.maximum(clicks - own * tf.cast(tf.reshape(clicked, [-1]), tf.float32), 0.0)
        p, s = self.prior_rate, self.prior_strength
        rate = (clicks + s * p) / (impressions + s)
        logit = tf.math.log(rate) - tf.math.log1p(-rate) - (math.log(p) - math.log1p(-p))
        features = tf.stack([logit, tf.math.log1p(impressions) * self._count_scale], axis=1)
        return tf.cast(features, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(impressions=self.impressions, clicks=self.clicks, num_oov_buckets=self.num_oov_buckets,
                      prior_rate=self.prior_rate, prior_strength=self.prior_strength)
        return config
