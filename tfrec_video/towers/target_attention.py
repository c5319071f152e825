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

Serving ranks `K` candidates per user. A `[batch, K, dim]` target gives the
`[batch, K, out]` outputs of every (user, candidate) pair without repeating the
history `K` times: the relevance MLP's first layer is linear in `[h, t, h * t,
h - t]`, so its kernel splits into a per-watched-video part, a per-candidate part
and one pairwise contraction (the same values, to float rounding, for a tenth
of the work at K = 100).

Example:

>>> import tensorflow as tf
>>> layer = TargetAttention(hidden_units=8)
>>> history = tf.math.l2_normalize(tf.random.stateless_normal([2, 3, 4], seed=[0, 1]), axis=-1)
>>> mask = tf.constant([[True, True, False], [False, False, False]])
>>> out = layer(history, mask, history[:, 0])
>>> out.shape, float(out[1, -1])     # the second user has no history
(TensorShape([2, 7]), 0.0)
>>> grouped = layer(history, mask, history[:, :2])        # two candidates per user
>>> grouped.shape, bool(tf.reduce_max(tf.abs(grouped[:, 0] - out)) < 1e-5)
(TensorShape([2, 2, 7]), True)
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
        """`[batch, dim + 3]` for a `[batch, dim]` target, `[batch, K, dim + 3]` for `[batch, K, dim]`
        targets (K candidates per user, see module docstring)."""
        history = tf.cast(history, self.compute_dtype)
        target = tf.cast(target, self.compute_dtype)
        if target.shape.rank == 3:
            return self._pool(history, mask, target, self._grouped_logits(history, target))
        length = tf.shape(history)[1]
        expanded = tf.repeat(target[:, None, :], length, axis=1)
        pairs = tf.concat([history, expanded, history * expanded, history - expanded], axis=-1)
        logits = tf.squeeze(self.relevance(self.relevance_hidden(pairs)), axis=-1)
        return self._pool(history, mask, target[:, None], logits[:, None])[:, 0]

    def _grouped_logits(self, history, targets):
        """Relevance logits `[batch, K, length]`: W [h, t, h*t, h-t] = (W1 + W4) h + (W2 - W4) t + W3 (h*t)."""
        if not self.relevance_hidden.built:  # the kernel is split below: build it as the concatenation would
            self.relevance_hidden.build([None, 4 * history.shape[-1]])
        kernel = tf.cast(self.relevance_hidden.kernel, self.compute_dtype)
        w_history, w_target, w_product, w_difference = tf.split(kernel, 4, axis=0)
        per_watched = tf.einsum("bld,de->ble", history, w_history + w_difference)
        per_target = tf.einsum("bkd,de->bke", targets, w_target - w_difference)
        pairwise = tf.einsum("bkd,blde->bkle", targets, history[:, :, :, None] * w_product)
        hidden = pairwise + per_watched[:, None] + per_target[:, :, None]
        hidden = tf.nn.relu(hidden + tf.cast(self.relevance_hidden.bias, self.compute_dtype))
        return tf.squeeze(self.relevance(hidden), axis=-1)

    @staticmethod
    def _pool(history, mask, targets, logits):
        """The outputs `[batch, K, dim + 3]` from the relevance logits `[batch, K, length]`."""
        mask = tf.broadcast_to(mask[:, None, :], tf.shape(logits))
        maskf = tf.cast(mask, logits.dtype)
        # The smallest finite value of the dtype: -1e9 is -inf in float16, and a softmax over an
        # all -inf row (empty history) is NaN.
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), tf.cast(max(-1e9, logits.dtype.min), logits.dtype)))
        weights = tf.nn.softmax(logits, axis=-1) * maskf
        pooled = tf.einsum("bkl,bld->bkd", weights, history)
        count = tf.reduce_sum(maskf, axis=-1)
        sims = tf.einsum("bld,bkd->bkl", history, targets)
        lowest = tf.cast(-1e4 if sims.dtype == tf.float16 else -1e9, sims.dtype)
        max_sim = tf.where(count > 0, tf.reduce_max(tf.where(mask, sims, lowest), axis=-1), tf.zeros_like(count))
        mean_sim = tf.reduce_sum(sims * maskf, axis=-1) / tf.maximum(count, 1.0)
        fraction = tf.math.log1p(count) / tf.math.log1p(tf.cast(tf.shape(history)[1], count.dtype))
        return tf.concat([pooled, tf.stack([max_sim, mean_sim, fraction], axis=-1)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config
