"""Metrics and ranking helpers behind evaluation and the oracle."""

import math

import numpy as np
import pytest

from tfrec_video.evaluation import CatalogRanker, ranks_from_scores, retrieval_metrics
from tfrec_video.evaluation.metrics import auc, logloss


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    labels = rng.random(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))


def test_logloss():
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_ranks_and_retrieval_metrics():
    scores = np.array([[0.1, 0.9, 0.4], [0.3, 0.2, 0.1]])
    ranks = ranks_from_scores(scores, np.array([2, 0]))
    assert ranks.tolist() == [1, 0]
    m = retrieval_metrics(ranks, ks=(1, 2))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)


def test_catalog_ranker_is_exact_with_ties_and_chunks():
    # Small integer embeddings make many exact score ties: they must count against the true video,
    # exactly as the numpy rank count does, whether or not the queries are split into chunks.
    rng = np.random.default_rng(0)
    videos = rng.integers(-2, 3, (500, 4)).astype(np.float32)
    queries = rng.integers(-2, 3, (97, 4)).astype(np.float32)
    target = rng.integers(0, 500, 97)
    expected = ranks_from_scores(queries @ videos.T, target)
    assert CatalogRanker(videos)(queries, target).tolist() == expected.tolist()
    assert CatalogRanker(videos, max_scores=500 * 7)(queries, target).tolist() == expected.tolist()
    # Ties really occurred: a strict count would differ.
    true = (queries @ videos.T)[np.arange(97), target]
    assert ((queries @ videos.T) == true[:, None]).sum() > 97
    assert CatalogRanker(videos)(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)).shape == (0,)


def test_catalog_ranker_rejects_bad_targets_and_shapes():
    ranker = CatalogRanker(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"catalog rows in \[0, 3\)"):
        ranker(np.ones((1, 3), np.float32), np.array([3]))
    with pytest.raises(ValueError, match="2 queries but 1 targets"):
        ranker(np.ones((2, 3), np.float32), np.array([0]))
    with pytest.raises(ValueError, match=r"\[num_videos, dim\]"):
        CatalogRanker(np.ones(3, np.float32))


def test_format_table_shows_the_hit_rates_at_the_served_length():
    from tfrec_video.evaluation.report import format_table

    report = {"retrieval": {"hr@5": 0.25, "recall@100": 0.5}, "serving": {"hr@5": 0.3, "n": 5}}
    table = format_table(report)
    assert "retrieval.hr@5                      0.2500" in table and "serving.hr@5" in table
    assert "hr@10" not in table
    assert "retrieval.recall@100                0.5000" in table


def test_catalog_rows_top_k_excluding_and_the_ranker_leave_out_the_same_rows():
    from tfrec_video.evaluation import catalog_index, catalog_rows, mask_rows, top_k_excluding
    import tensorflow as tf

    index_of = catalog_index(np.array(["a", "b", "c", "d", "e"], object))
    ids = np.array([[b"c", b"", b"zz", b"c"], ["a", "b", "d", ""]], object)
    exclude = catalog_rows(index_of, ids)
    assert exclude.tolist() == [[2, -1, -1, 2], [0, 1, 3, -1]]  # padding and unknown ids: -1; repeats kept
    assert catalog_rows(index_of, np.zeros((2, 0), object)).shape == (2, 0)
    scores = np.array([[0.5, 0.25, 0.75, 0.125, 0.0], [0.5, 0.25, 0.75, 0.125, 0.0]], np.float32)
    masked = mask_rows(tf.constant(scores), tf.constant(np.concatenate([exclude, [[7], [-3]]], axis=1))).numpy()
    assert (masked[0, 2] < -1e30) and (masked[1, [0, 1, 3]] < -1e30).all()  # rows past the catalog: ignored
    np.testing.assert_array_equal(masked[0, [0, 1, 3, 4]], scores[0, [0, 1, 3, 4]])
    top, rows = top_k_excluding(tf.constant(scores), 2, tf.constant(exclude))
    assert rows.numpy().tolist() == [[0, 1], [2, 4]] and top.numpy().tolist() == [[0.5, 0.25], [0.75, 0.0]]
    # m = 0 changes nothing; a list longer than what is left ends with the excluded rows, exactly k long.
    assert top_k_excluding(tf.constant(scores), 3, tf.zeros([2, 0], tf.int64))[1].numpy().tolist() == [[2, 0, 1]] * 2
    top, rows = top_k_excluding(tf.constant(scores), 4, tf.constant(exclude))
    assert rows.numpy()[1, :2].tolist() == [2, 4] and sorted(rows.numpy()[1, 2:]) == [0, 1]
    np.testing.assert_array_equal(top.numpy()[1, 2:], scores[1, rows.numpy()[1, 2:]])  # unmasked scores

    # The ranker: excluded videos rank nowhere, and an excluded true video ranks `num_videos` (a miss).
    rng = np.random.default_rng(1)
    videos, queries = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(9, 4)).astype(np.float32)
    target = rng.integers(0, 40, 9)
    seen = rng.integers(-1, 40, (9, 6))
    seen[0, 3] = target[0]
    full = queries @ videos.T
    hidden = (np.arange(40)[None, :, None] == seen[:, None, :]).any(axis=2)
    expected = ranks_from_scores(np.where(hidden, -np.inf, full), target)
    expected[hidden[np.arange(9), target]] = 40
    assert expected[0] == 40
    for ranker in (CatalogRanker(videos), CatalogRanker(videos, max_scores=40 * 4)):
        assert ranker(queries, target, seen).tolist() == expected.tolist()
    assert (CatalogRanker(videos)(queries, target) != expected).any()
