"""Plain numpy metrics shared by the dataset's oracle and the evaluation module.

Example:

>>> auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.4]))
1.0
"""

import numpy as np


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
