"""`maximal_marginal_relevance`: the plain order at diversity 0, a varied list above it, one graph for serving."""

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before tensorflow: legacy Keras)
import tensorflow as tf

from tfrec_video.models.diversify import maximal_marginal_relevance


def random_inputs(seed, batch=6, k=12, d=8):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(batch, k)).astype(np.float32) * 4.0
    embeddings = rng.normal(size=(batch, k, d)).astype(np.float32)
    return scores, embeddings


def reference_mmr(scores, embeddings, diversity, n):
    """One row in plain numpy, step by step as the module docstring says (ties: the more relevant)."""
    span = scores.max() - scores.min()
    relevance = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-6)
    similarity = unit @ unit.T
    max_similarity = np.full(len(scores), -1.0, np.float32)
    chosen = []
    for _ in range(n):
        objective = (1 - diversity) * relevance - diversity * max_similarity
        objective[chosen] = -np.inf
        tied = np.flatnonzero(objective >= objective.max())
        pick = int(tied[np.argmax(relevance[tied])])
        chosen.append(pick)
        max_similarity = np.maximum(max_similarity, similarity[pick])
    return chosen


def near_duplicates():
    """4 candidates: 0 and 1 near-duplicates with the top two scores, 2 unlike them, 3 like neither, least relevant."""
    scores = tf.constant([[5.0, 4.8, 3.0, 1.0]])
    embeddings = tf.constant([[[1.0, 0.0, 0.0], [0.98, 0.2, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    return scores, embeddings


def test_diversity_zero_is_the_top_k_order():
    scores, embeddings = random_inputs(seed=0)
    for n in (1, 5, 12):
        got = maximal_marginal_relevance(scores, embeddings, 0.0, n)
        np.testing.assert_array_equal(got.numpy(), tf.math.top_k(scores, n).indices.numpy())


def test_near_duplicates_are_split_by_diversity():
    scores, embeddings = near_duplicates()
    assert maximal_marginal_relevance(scores, embeddings, 0.0, 4).numpy().tolist() == [[0, 1, 2, 3]]
    diverse = maximal_marginal_relevance(scores, embeddings, 0.5, 4).numpy().tolist()[0]
    assert diverse[:2] == [0, 2]
    assert diverse.index(1) > diverse.index(2)


def test_diversity_one_still_starts_with_the_most_relevant():
    scores, embeddings = near_duplicates()
    scores = tf.constant([[1.0, 4.8, 3.0, 5.0]])  # the most relevant is the last, not position 0
    assert maximal_marginal_relevance(scores, embeddings, 1.0, 1).numpy().tolist() == [[3]]
    # Out-of-range diversity is clipped, not extrapolated.
    np.testing.assert_array_equal(maximal_marginal_relevance(scores, embeddings, 7.0, 4),
                                  maximal_marginal_relevance(scores, embeddings, 1.0, 4))
    np.testing.assert_array_equal(maximal_marginal_relevance(scores, embeddings, -3.0, 4),
                                  tf.math.top_k(scores, 4).indices)


def test_matches_a_plain_numpy_reference():
    scores, embeddings = random_inputs(seed=1, batch=8)
    diversity = np.linspace(0.0, 1.0, 8).astype(np.float32)
    got = maximal_marginal_relevance(scores, embeddings, diversity, 7).numpy()
    for row in range(8):
        assert got[row].tolist() == reference_mmr(scores[row], embeddings[row], diversity[row], 7), row


def test_diversity_per_row_is_that_row_alone():
    scores, embeddings = near_duplicates()
    both = maximal_marginal_relevance(tf.concat([scores] * 2, 0), tf.concat([embeddings] * 2, 0),
                                      tf.constant([0.0, 0.7]), 4).numpy()
    assert both[0].tolist() != both[1].tolist()
    for row, diversity in enumerate((0.0, 0.7)):
        alone = maximal_marginal_relevance(scores, embeddings, tf.constant([diversity]), 4).numpy()
        assert both[row].tolist() == alone[0].tolist()


@pytest.mark.parametrize("n", [1, 6, 12])
def test_positions_are_distinct_and_in_range(n):
    scores, embeddings = random_inputs(seed=2)
    embeddings[:, ::3] = 0.0  # a third of the candidates have no embedding
    scores[1] = 2.5  # a row of equal scores
    for diversity in (0.0, 0.4, 1.0):
        got = maximal_marginal_relevance(scores, embeddings, diversity, n).numpy()
        assert got.dtype == np.int32 and got.shape == (6, n)
        assert ((got >= 0) & (got < 12)).all()
        assert all(len(set(row)) == n for row in got.tolist())


def test_all_equal_scores_and_zero_embeddings_give_no_nan():
    # NaN would make every objective compare false: argmax then returns 0 at each step, a repeated position.
    got = maximal_marginal_relevance(tf.fill([3, 5], 1.0), tf.zeros([3, 5, 4]), 0.5, 5).numpy()
    assert all(sorted(row) == [0, 1, 2, 3, 4] for row in got.tolist())
    assert maximal_marginal_relevance(tf.constant([[0.3]]), tf.zeros([1, 1, 4]), 0.5, 1).numpy().tolist() == [[0]]


def test_half_precision_inputs_are_read_as_float32():
    scores, embeddings = random_inputs(seed=3)
    scores = scores.astype(np.float16).astype(np.float32)
    embeddings = embeddings.astype(np.float16).astype(np.float32)
    expected = maximal_marginal_relevance(scores, embeddings, 0.3, 6).numpy()
    got = maximal_marginal_relevance(tf.constant(scores, tf.float16), tf.constant(embeddings, tf.float16),
                                     tf.constant(0.3, tf.float16), 6)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), expected)


def test_diversity_covers_more_clusters():
    rng = np.random.default_rng(4)
    rows, k, d, clusters, n = 50, 30, 8, 6, 6
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    cluster = rng.integers(0, clusters, size=(rows, k))
    embeddings = centres[cluster] + 0.15 * rng.normal(size=(rows, k, d)).astype(np.float32)
    # Each row prefers some topics, as a user's scores do, so the top by relevance bunches up.
    taste = rng.normal(size=(rows, clusters)).astype(np.float32) * 2.0
    scores = np.take_along_axis(taste, cluster, axis=1) + 0.5 * rng.normal(size=(rows, k)).astype(np.float32)

    def mean_clusters(diversity):
        chosen = maximal_marginal_relevance(scores, embeddings, diversity, n).numpy()
        return np.mean([len(set(c)) for c in np.take_along_axis(cluster, chosen, axis=1).tolist()])

    plain, diverse = mean_clusters(0.0), mean_clusters(0.6)
    assert diverse > plain + 1.0, (plain, diverse)


def traced():
    return tf.function(maximal_marginal_relevance, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None, 8], tf.float32),
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)]).get_concrete_function()


def test_traces_with_unknown_batch_k_and_n_and_matches_eager():
    concrete = traced()
    for batch, k, n in ((3, 10, 4), (1, 1, 1), (5, 7, 7)):
        scores, embeddings = random_inputs(seed=batch, batch=batch, k=k)
        diversity = np.linspace(0.0, 0.9, batch).astype(np.float32)
        got = concrete(tf.constant(scores), tf.constant(embeddings), tf.constant(diversity), tf.constant(n))
        np.testing.assert_array_equal(got.numpy(), maximal_marginal_relevance(scores, embeddings, diversity, n))


def test_the_graph_has_no_python_ops():
    graph_def = traced().graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    assert "While" in ops or "StatelessWhile" in ops  # the loop's body is in the library, and was walked
    assert not [op for op in ops if "PyFunc" in op], ops


def test_survives_a_saved_model_round_trip(tmp_path):
    module = tf.Module()
    module.rerank = tf.function(maximal_marginal_relevance, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None, 3], tf.float32),
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "mmr"))
    loaded = tf.saved_model.load(str(tmp_path / "mmr"))
    scores, embeddings = near_duplicates()
    got = loaded.rerank(scores, embeddings, tf.constant([0.5]), tf.constant(4))
    np.testing.assert_array_equal(got.numpy(), maximal_marginal_relevance(scores, embeddings, 0.5, 4))
