"""`maximal_marginal_relevance`: re-ranks a served list so that it is not ten videos of one topic.

The ranking stage scores each of the `k` retrieved candidates on its own, so
near-duplicates score alike: when one cooking video scores well, so do the nine
cooking videos that sit next to it in embedding space, and the served `n` is one
topic. Maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998) builds the
list greedily instead: each step takes the not-yet-chosen candidate with the best

    (1 - diversity) * relevance - diversity * max cosine similarity to the candidates already chosen

so a candidate much like one already in the list must be that much more relevant
to be next. `diversity = 0` is the plain relevance order; `diversity = 1` keeps
the most relevant candidate first and then only looks for what is unlike the list.

The scores may be on any scale (logits, log-probabilities, a `ListBlend` blend),
and a similarity is a cosine in [-1, 1]. Each row's scores are therefore min-max
normalised to [0, 1] first, so that one `diversity` means the same trade-off for
every model and every request; a row whose scores are all equal has relevance 0
throughout and is ordered by dissimilarity alone.

Pure TensorFlow ops (a `tf.while_loop` over the `n` picks, one `[batch, k, k]`
similarity matrix), so it traces with unknown batch, `k` and `n` and runs in
stock TF Serving.

Example: candidates 0 and 1 are near-duplicates with the two best scores.

>>> import tensorflow as tf
>>> scores = tf.constant([[3.0, 2.0, 1.0]] * 2)
>>> embeddings = tf.constant([[[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]] * 2)
>>> maximal_marginal_relevance(scores, embeddings, diversity=tf.constant([0.0, 0.5]), n=3).numpy().tolist()
[[0, 1, 2], [0, 2, 1]]
"""

import tensorflow as tf


def maximal_marginal_relevance(scores, embeddings, diversity, n) -> tf.Tensor:
    """Re-ranks each row's k candidates by maximal marginal relevance; returns the chosen positions [batch, n] (int32), in order.

    Args:
      scores: `[batch, k]` finite relevance scores on any scale; min-max normalised per row.
      embeddings: `[batch, k, d]` candidate embeddings; L2-normalised here (a zero
        vector is similar to nothing), the similarity is their cosine.
      diversity: `[batch]` (one per request row) or a scalar, clipped to [0, 1].
      n: how many to choose, a python int or a scalar int32 tensor, `n <= k`.

    Returns:
      `[batch, n]` int32 positions into the `k` axis, distinct within a row, in
      the order to serve them. With `diversity = 0` the order of
      `tf.math.top_k(scores, n)`.
    """
    # float16/bfloat16 would turn nearby normalised scores into ties and round the cosines.
    scores = tf.cast(scores, tf.float32)
    embeddings = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=-1)
    low = tf.reduce_min(scores, axis=1, keepdims=True)
    # divide_no_nan: a row of equal scores has span 0 and gets relevance 0, not NaN.
    relevance = tf.math.divide_no_nan(scores - low, tf.reduce_max(scores, axis=1, keepdims=True) - low)
    batch, k = tf.shape(scores)[0], tf.shape(scores)[1]
    diversity = tf.clip_by_value(tf.cast(diversity, tf.float32), 0.0, 1.0)
    diversity = tf.broadcast_to(diversity, [batch])[:, tf.newaxis]
    similarity = tf.linalg.matmul(embeddings, embeddings, transpose_b=True)
    weighted_relevance = (1.0 - diversity) * relevance
    n = tf.convert_to_tensor(n, dtype=tf.int32)

    def step(i, chosen, max_similarity, positions):
        objective = tf.where(chosen, -float("inf"), weighted_relevance - diversity * max_similarity)
        # Ties go to the more relevant candidate: at diversity 1 every candidate ties at the first
        # step (all max_similarity -1), and the list must still start with the most relevant one.
        best = tf.reduce_max(objective, axis=1, keepdims=True)
        pick = tf.math.argmax(tf.where(objective >= best, relevance, -float("inf")), axis=1, output_type=tf.int32)
        chosen = tf.logical_or(chosen, tf.one_hot(pick, k, on_value=True, off_value=False))
        max_similarity = tf.maximum(max_similarity, tf.gather(similarity, pick, axis=1, batch_dims=1))
        return i + 1, chosen, max_similarity, positions.write(i, pick)

    # -1, the lowest cosine, shifts every candidate alike at the first step: no special case for it.
    _, _, _, positions = tf.while_loop(
        lambda i, *_: i < n, step,
        (tf.constant(0), tf.zeros_like(relevance, dtype=tf.bool), tf.fill(tf.shape(relevance), -1.0),
         tf.TensorArray(tf.int32, size=n, element_shape=tf.TensorShape([None]))))
    return tf.transpose(positions.stack())
