"""`TargetAttention`: the candidate video attends over the user's watched videos (DIN-style).

A user's history pooled once, the same for every candidate (what the query tower
does), cannot say "this user watched three videos like *this one*". Deep Interest
Network (Zhou et al., KDD 2018) lets each candidate weigh the watched videos by
their relevance to it. For candidate `t` and watched videos `h_1..h_L` (padding
masked):

    a_i     = MLP([h_i, t, h_i * t, h_i - t])             one relevance logit per watched video
    pooled  = sum_i softmax(a)_i h_i
    sims    = h_i . t                                     (cosines when both are unit vectors)
    output  = [pooled, max_i sims, mean_i sims, log1p(L_valid) / log1p(L)]

The similarity statistics are explicit because they are what matters most and an
MLP over concatenations finds a dot product only slowly. An empty history gives
zeros (and a count feature of 0), never NaN.

`VideoRecModel` passes the candidate tower's embeddings of the watched videos and
of the candidate (the same unit sphere as retrieval), or, without history content,
the shared video-id embeddings of both.

Example:

>>> import tensorflow as tf
>>> layer = TargetAttention(hidden_units=8)
>>> history = tf.math.l2_normalize(tf.random.stateless_normal([2, 3, 4], seed=[0, 1]), axis=-1)
>>> mask = tf.constant([[True, True, False], [False, False, False]])
>>> out = layer(history, mask, history[:, 0])
>>> out.shape, float(out[1, -1])     # the second user has no history
(TensorShape([2, 7]), 0.0)
"""

import tensorflow as tf


class TargetAttention(tf.keras.layers.Layer):
    """Pools `[batch, length, dim]` history embeddings for a `[batch, dim]` target (see module docstring).

    Args:
      hidden_units: width of the relevance MLP's hidden layer.
    """

    def __init__(self, hidden_units: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.relevance_hidden = tf.keras.layers.Dense(self.hidden_units, activation="relu", name="relevance_hidden")
        self.relevance = tf.keras.layers.Dense(1, name="relevance")

    def call(self, history: tf.Tensor, mask: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        history = tf.cast(history, self.compute_dtype)
        target = tf.cast(target, self.compute_dtype)
        length = tf.shape(history)[1]
        expanded = tf.repeat(target[:, None, :], length, axis=1)
        pairs = tf.concat([history, expanded, history * expanded, history - expanded], axis=-1)
        logits = tf.squeeze(self.relevance(self.relevance_hidden(pairs)), axis=-1)
        maskf = tf.cast(mask, logits.dtype)
        # The smallest finite value of the dtype: -1e9 is -inf in float16, and a softmax over an
        # all -inf row (empty history) is NaN.
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), tf.cast(max(-1e9, logits.dtype.min), logits.dtype)))
        weights = tf.nn.softmax(logits, axis=1) * maskf
        pooled = tf.einsum("bl,bld->bd", weights, history)
        count = tf.reduce_sum(maskf, axis=1)
        sims = tf.einsum("bld,bd->bl", history, target)
        lowest = tf.cast(-1e4 if sims.dtype == tf.float16 else -1e9, sims.dtype)
        max_sim = tf.where(count > 0, tf.reduce_max(tf.where(mask, sims, lowest), axis=1), tf.zeros_like(count))
        mean_sim = tf.reduce_sum(sims * maskf, axis=1) / tf.maximum(count, 1.0)
        fraction = tf.math.log1p(count) / tf.math.log1p(tf.cast(length, count.dtype))
        return tf.concat([pooled, tf.stack([max_sim, mean_sim, fraction], axis=1)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config
