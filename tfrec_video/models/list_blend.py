"""`ListBlend`: the order of the served list, a blend of the retrieval score, popularity and the click logit.

`serving_default` retrieves `k` candidates and returns `n` of them. Ordering them by
the click probability alone assumes the ranking head sees each candidate the way
it saw training impressions; it does not. It learned `P(click | shown)` from
impressions that a logging policy chose, largely by popularity, so a popular
video's many impressions to uninterested users teach it that popular videos are
clicked *less*, while in truth they are clicked more (measured on the built-in
data: within the retrieved lists, the click logit's rank correlation with the
true click probability was 0.24, the retrieval score's 0.37). And retrieval was
trained with part of the popularity taken out (the logQ correction), which
serves recall but not the list a user is shown.

So the list is ordered by

    score = a * retrieval_score + b * log q(video) + c * click_logit

where `q` is the video's share of training impressions. The three weights are fitted
after training on validation clicks (`tfrec_video.training.list_blend`): the
likelihood that the clicked video comes first among the retrieved candidates,
with weights kept >= 0; the served order is then whichever of the fitted blend,
retrieval's own order `(1, 0, 0)` and the click order `(0, 0, 1)` has the best hit
rate on those clicks. Without validation data they stay `(0, 0, 1)`: the
candidates ordered by click probability, the classic two-stage order.

Example:

>>> import tensorflow as tf
>>> blend = ListBlend()
>>> blend(tf.constant([[0.9, 0.1]]), tf.constant([[-5.0, -1.0]]), tf.constant([[-2.0, 3.0]])).numpy().tolist()
[[-2.0, 3.0]]
>>> blend.set_weights_to([1.0, 0.0, 0.0])
>>> blend(tf.constant([[0.9, 0.1]]), tf.constant([[-5.0, -1.0]]), tf.constant([[-2.0, 3.0]])).numpy().tolist()
[[0.8999999761581421, 0.10000000149011612]]
"""

from typing import Sequence

import tensorflow as tf


class ListBlend(tf.keras.layers.Layer):
    """Scores retrieved candidates for the served order (see module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Made here, not in build: serving reads them inside traced functions from the first call.
        self.blend_weights = self.add_weight("blend_weights", shape=[3], dtype=tf.float32, trainable=False,
                                             initializer=tf.constant_initializer([0.0, 0.0, 1.0]),
                                             experimental_autocast=False)  # the blend is float32 under mixed precision

    def call(self, retrieval_score, log_popularity, click_logit):
        w = self.blend_weights
        return (w[0] * tf.cast(retrieval_score, tf.float32) + w[1] * tf.cast(log_popularity, tf.float32)
                + w[2] * tf.cast(click_logit, tf.float32))

    def set_weights_to(self, weights: Sequence[float]) -> None:
        """Sets `(a, b, c)`; they must be >= 0 and not all 0."""
        values = [float(v) for v in weights]
        if len(values) != 3 or min(values) < 0 or max(values) <= 0:
            raise ValueError(f"ListBlend {self.name}: need three weights >= 0, not all 0, got {values}.")
        self.blend_weights.assign(values)

    @property
    def values(self):
        """The weights `(a, b, c)` as floats."""
        return [float(v) for v in self.blend_weights.numpy()]
