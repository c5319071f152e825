"""Plain numpy metrics: AUC, log-loss, Recall@K and NDCG@K from ranks, calibration.

Shared by the built-in dataset's oracle and the evaluation report.

Example:

>>> auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.4]))
1.0
"""

from typing import Dict, Sequence

import numpy as np

DEFAULT_KS = (10, 50, 100)
# Cut-offs of the report's Recall@K curve (those up to the catalog size).
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
CALIBRATION_BINS = 10


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, from ranks (ties get their average rank).

    Args:
      labels: 0/1 labels.
      scores: real-valued scores, higher meaning more likely positive.

    Returns:
      The AUC, or `nan` when only one class is present.

    Example:

    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}.")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # Average ranks over ties: each run of equal scores gets the mean of its 1-based ranks.
    _, start, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    avg_rank = start + (counts + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of `probabilities` against 0/1 `labels`."""
    p = np.clip(np.asarray(probabilities, np.float64).reshape(-1), eps, 1 - eps)
    y = np.asarray(labels, np.float64).reshape(-1)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> Dict[str, float]:
    """Recall@K and NDCG@K from 0-based ranks of the relevant item."""
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"{prefix}recall@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else float("nan")
    return out


def recall_curve(ranks: np.ndarray, num_videos: int, ks: Sequence[int] = CURVE_KS) -> Dict[str, list]:
    """Recall@K for every K of `ks` up to `num_videos` (and `num_videos` itself): the report's curve."""
    ranks = np.asarray(ranks)
    cut = sorted({k for k in ks if k < num_videos} | {int(num_videos)})
    recall = [float((ranks < k).mean()) if len(ranks) else None for k in cut]
    return {"k": cut, "recall": recall}


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> Dict[str, object]:
    """A reliability table of click probabilities: equal-width bins over [0, 1].

    Returns:
      `{"bin_lower", "bin_upper", "mean_predicted", "observed_rate", "count"}`
      lists over the non-empty bins, and `ece`, the expected calibration error
      (the count-weighted mean of |observed rate - mean predicted|).
    """
    labels = np.asarray(labels, np.float64).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    out = {"bin_lower": [], "bin_upper": [], "mean_predicted": [], "observed_rate": [], "count": []}
    gap = 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        if not n:
            continue
        predicted, observed = float(probabilities[members].mean()), float(labels[members].mean())
        for key, value in (("bin_lower", float(edges[b])), ("bin_upper", float(edges[b + 1])),
                           ("mean_predicted", predicted), ("observed_rate", observed), ("count", n)):
            out[key].append(value)
        gap += n * abs(observed - predicted)
    out["ece"] = gap / len(labels) if len(labels) else None
    return out
