"""Metrics and ranking helpers behind evaluation and the oracle."""

import math

import numpy as np
import pytest

from tfrec_video.evaluation import ranks_from_scores, retrieval_metrics
from tfrec_video.metrics import auc, logloss


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
