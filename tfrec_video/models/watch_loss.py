"""`watch_fraction_loss`: the watch head's loss, a logistic loss on the watched fraction of clicked impressions.

A click's `watch_fraction` (0-1: how much of the video was watched) is a
proportion, not a class. The logistic loss with the fraction as a soft label,

    L = -[f · log σ(z) + (1 - f) · log(1 - σ(z))],

is the weighted logistic regression of a "watched" positive (weight f) and an
"abandoned" negative (weight 1 - f), and it is minimised, for a given input, by
`σ(z) = E[f]`: the head's `sigmoid` is the expected watched fraction, bounded in
[0, 1] as the fraction is (a squared error on a linear output would not be).
Only clicked rows count: an unclicked impression has no watch time to learn, and
the loss is the mean over the batch's clicks, so its scale does not depend on the
click-through rate (as the retrieval loss).

The label is the impressions' `watch_fraction` column or, when a log records
seconds instead, `watch_seconds / duration_s` (clipped to [0, 1]).

Example:

>>> import tensorflow as tf
>>> features = {"watch_fraction": tf.constant([0.8, 0.0, 0.25])}
>>> clicked = tf.constant([1.0, 0.0, 1.0])
>>> round(float(watch_fraction_loss(features, clicked, tf.constant([0.0, 5.0, 0.0]))), 4)  # log 2 on each click
0.6931
"""

from typing import Mapping

import tensorflow as tf

from tfrec_video.errors import ConfigError


def watch_labels(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Each row's watched fraction `[batch]` float32 in [0, 1], from `watch_fraction`, else `watch_seconds /
    duration_s`; a non-finite value counts as 0.

    Raises:
      ConfigError: the features hold neither.
    """
    if "watch_fraction" in features:
        fraction = tf.cast(tf.reshape(features["watch_fraction"], [-1]), tf.float32)
    elif "watch_seconds" in features and "duration_s" in features:
        seconds = tf.cast(tf.reshape(features["watch_seconds"], [-1]), tf.float32)
        duration = tf.cast(tf.reshape(features["duration_s"], [-1]), tf.float32)
        fraction = tf.math.divide_no_nan(seconds, duration)
    else:
        raise ConfigError(
            "ModelConfig.ranking_objectives has 'watch', so the impressions need a watch_fraction column (the "
            "share of the video watched after a click, 0-1), or watch_seconds and the catalog's duration_s; the "
            f"batch has {sorted(features)}.")
    fraction = tf.where(tf.math.is_finite(fraction), fraction, tf.zeros_like(fraction))
    return tf.clip_by_value(fraction, 0.0, 1.0)


def watch_fraction_loss(features: Mapping[str, tf.Tensor], clicked: tf.Tensor, watch_logits: tf.Tensor) -> tf.Tensor:
    """The mean over clicked rows of the logistic loss of `watch_logits` against the watched fraction.

    Args:
      features: the batch (see `watch_labels` for the columns read).
      clicked: `[batch]` float 0/1.
      watch_logits: `[batch]` the watch head's logits.

    Returns:
      A float32 scalar (0 for a batch without clicks).
    """
    labels = watch_labels(features)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=tf.cast(watch_logits, tf.float32))
    clicked = tf.cast(clicked, tf.float32)
    return tf.reduce_sum(losses * clicked) / tf.maximum(tf.reduce_sum(clicked), 1.0)
