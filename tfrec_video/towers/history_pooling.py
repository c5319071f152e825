"""`HistoryPooling`: one vector from a padded list of recently watched video ids.

History entries are embedded with the *shared* video-id embedding (the same rows
the candidate tower uses), so what the model learns about a video as a
candidate also shapes the users who watched it. Padding (`""`, id 0) is masked.

* `"mean"`: the mean of the non-padding embeddings.
* `"attention"`: a softmax-weighted sum; weights come from a learned query
  (optionally conditioned on the user embedding) dotted with each entry, plus a
  learned recency bias per position (history is newest first).

An empty history pools to zeros.

Example:

>>> import tensorflow as tf
>>> emb = tf.random.stateless_normal([2, 3, 4], seed=[0, 1])
>>> ids = tf.constant([["a", "b", ""], ["", "", ""]])
>>> HistoryPooling("mean")(emb, ids).shape
TensorShape([2, 4])
"""

import tensorflow as tf

POOLINGS = ("mean", "attention")


class HistoryPooling(tf.keras.layers.Layer):
    """Pools `[batch, length, dim]` history embeddings into `[batch, dim]`.

    Args:
      pooling: `"mean"` or `"attention"`.
    """

    def __init__(self, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"HistoryPooling: pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.pooling = pooling

    def build(self, input_shape):
        if self.pooling == "attention":
            length, dim = int(input_shape[1]), int(input_shape[2])
            self.attention_query = self.add_weight("attention_query", [dim], initializer="zeros")
            self.query_projection = tf.keras.layers.Dense(dim, use_bias=False, name="query_projection")
            self.recency_bias = self.add_weight("recency_bias", [length], initializer="zeros")
        super().build(input_shape)

    def call(self, embeddings, ids, context=None):
        mask = tf.not_equal(ids, "")
        maskf = tf.cast(mask, embeddings.dtype)
        if self.pooling == "mean":
            total = tf.reduce_sum(embeddings * maskf[:, :, None], axis=1)
            return total / tf.maximum(tf.reduce_sum(maskf, axis=1, keepdims=True), 1.0)
        query = self.attention_query
        if context is not None:
            query = query + self.query_projection(context)
        else:
            query = tf.broadcast_to(query, tf.shape(embeddings)[::2])
        scale = tf.math.rsqrt(tf.cast(tf.shape(embeddings)[-1], embeddings.dtype))
        logits = tf.einsum("bld,bd->bl", embeddings, query) * scale + self.recency_bias
        # -1e9 is -inf in float16, and a softmax over an all -inf row (empty history) is NaN.
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), tf.cast(max(-1e9, logits.dtype.min), logits.dtype)))
        weights = tf.nn.softmax(logits, axis=1) * maskf  # zeros when the history is empty
        return tf.einsum("bl,bld->bd", weights, embeddings)

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling)
        return config
