"""Offline evaluation: retrieval over the whole catalog, ranking on every impression.

Retrieval is measured on the test split's clicked impressions. For each one the
query embedding is scored against every catalog video (a batched matmul, exact),
and the rank of the clicked video gives Recall@K and NDCG@K (one relevant item,
so NDCG@K = 1/log2(rank + 2) when rank < K). Ranking is measured on all test
impressions: AUC and log-loss of the click probability.

Each retrieval metric is also reported on two subsets of test clicks:

* `cold_start`: the clicked video never appears in the training impressions;
* `warm_start`: it does.

Baselines computed on the same clicks:

* `popularity`: rank every video by its training click count (same list for all);
* the oracle, when the built-in dataset's ground truth is present: rank by the
  true click logit (Recall@K that no model can beat in expectation), and AUC of
  the true click probability.

Example:

>>> import numpy as np
>>> ranks_from_scores(np.array([[0.1, 0.9, 0.4]]), np.array([2]))
array([1])
"""

import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.metrics import auc, logloss

DEFAULT_KS = (10, 50, 100)


def ranks_from_scores(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's `target` column among that row's scores (ties pessimistic)."""
    true = scores[np.arange(len(target)), target]
    return (scores > true[:, None]).sum(axis=1) + (scores == true[:, None]).sum(axis=1) - 1


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> Dict[str, float]:
    """Recall@K and NDCG@K from 0-based ranks of the relevant item."""
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"{prefix}recall@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else float("nan")
    return out


def _to_str(values) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)],
                    dtype=object)


def embed_catalog(model, catalog: Mapping[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Video embeddings `[num_videos, dim]` of the whole catalog, in catalog order."""
    names = model.video_feature_names
    data = tf.data.Dataset.from_tensor_slices({n: catalog[n] for n in names}).batch(batch_size)
    embed = tf.function(lambda f: model.embed_videos(f, training=False))
    return np.concatenate([embed(batch).numpy() for batch in data], axis=0)


def evaluate(
    model,
    catalog: Mapping[str, np.ndarray],
    test: tf.data.Dataset,
    train_video_ids: Iterable[str],
    train_click_counts: Optional[Mapping[str, int]] = None,
    truth=None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
) -> Dict[str, Dict[str, float]]:
    """Evaluates a trained `VideoRecModel` on test impressions.

    Args:
      model: a trained `VideoRecModel`.
      catalog: the catalog as column arrays (all videos that can be retrieved).
      test: unbatched test impressions with catalog features joined.
      train_video_ids: ids of videos in the training impressions (defines cold start).
      train_click_counts: clicks per video in training, for the popularity baseline.
      truth: an optional `tfrec_video.datasets.GroundTruth` for oracle metrics.
        Its test click probabilities must be aligned with `test`'s order.
      ks: cut-offs for Recall@K and NDCG@K.
      batch_size: evaluation batch size.

    Returns:
      A nested dict with `retrieval`, `ranking`, `cold_start`, `warm_start`,
      `popularity` and `counts` sections (oracle keys present when `truth` is given).
    """
    catalog_ids = _to_str(catalog["video_id"])
    index_of = {v: i for i, v in enumerate(catalog_ids)}
    video_matrix = embed_catalog(model, catalog)
    warm = set(_to_str(list(train_video_ids)).tolist())
    popularity = np.zeros(len(catalog_ids), np.float64)
    for vid, count in (train_click_counts or {}).items():
        if vid in index_of:
            popularity[index_of[vid]] = count
    # Break popularity ties by catalog order so the baseline is deterministic.
    popularity = popularity - np.arange(len(catalog_ids)) * 1e-9
    max_k = max(ks)

    forward = tf.function(lambda f: model(f, training=False))
    probs, labels = [], []
    model_ranks, pop_ranks, cold_flags = [], [], []
    click_users, click_targets, click_context = [], [], {"hour": [], "device": []}
    for batch in test.batch(batch_size):
        out = forward(batch)
        clicked = batch["clicked"].numpy().reshape(-1).astype(bool)
        probs.append(out["click_probability"].numpy())
        labels.append(clicked.astype(np.int64))
        if not clicked.any():
            continue
        vids = _to_str(batch["video_id"].numpy()[clicked])
        target = np.array([index_of.get(v, -1) for v in vids])
        known = target >= 0  # a clicked video absent from the catalog cannot be retrieved
        q = out["query_embedding"].numpy()[clicked][known]
        target = target[known]
        model_ranks.append(ranks_from_scores(q @ video_matrix.T, target))
        pop_ranks.append((popularity > popularity[target][:, None]).sum(axis=1))
        cold_flags.append(np.array([v not in warm for v in vids[known]]))
        click_users.append(_to_str(batch["user_id"].numpy()[clicked][known]))
        click_targets.append(target)
        for name in click_context:
            if name in batch:
                click_context[name].append(batch[name].numpy()[clicked][known])
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    cat = (lambda xs, dtype=np.int64: np.concatenate(xs) if xs else np.zeros(0, dtype))
    model_ranks, pop_ranks = cat(model_ranks), cat(pop_ranks)
    cold = cat(cold_flags, bool).astype(bool)

    report = {
        "retrieval": retrieval_metrics(model_ranks, ks),
        "ranking": {"auc": auc(labels, probs), "logloss": logloss(labels, probs)},
        "cold_start": {**retrieval_metrics(model_ranks[cold], ks), "clicks": int(cold.sum())},
        "warm_start": {**retrieval_metrics(model_ranks[~cold], ks), "clicks": int((~cold).sum())},
        "popularity": retrieval_metrics(pop_ranks, ks),
        "counts": {"test_impressions": int(len(labels)), "test_clicks": int(len(model_ranks)),
                   "catalog_videos": int(len(catalog_ids)), "max_k": int(max_k)},
    }
    if truth is not None:
        true_p = np.asarray(truth.test_click_prob(), np.float64)
        if len(true_p) != len(labels):
            raise ValueError(f"evaluate: the ground truth has {len(true_p)} test impressions, the test data {len(labels)}.")
        report["ranking"]["oracle_auc"] = auc(labels, true_p)
        report["ranking"]["oracle_logloss"] = logloss(labels, true_p)
        users, targets = cat(click_users, object), cat(click_targets)
        context = {k: (cat(v) if v else None) for k, v in click_context.items()}
        # Map the truth's catalog order onto ours.
        truth_ids = _to_str(truth.video_ids)
        column = np.array([index_of.get(v, -1) for v in truth_ids])
        oracle_ranks, oracle_cold = [], []
        for start in range(0, len(users), 512):
            sl = slice(start, start + 512)
            logits = truth.click_logits(users[sl], None,
                                        hour=None if context["hour"] is None else context["hour"][sl],
                                        device=None if context["device"] is None else context["device"][sl])
            scores = np.full((logits.shape[0], len(catalog_ids)), -np.inf)
            scores[:, column[column >= 0]] = logits[:, column >= 0]
            oracle_ranks.append(ranks_from_scores(scores, targets[sl]))
        oracle_ranks = cat(oracle_ranks)
        for section, mask in (("retrieval", slice(None)), ("cold_start", cold), ("warm_start", ~cold)):
            report[section].update({f"oracle_{k}": v for k, v in retrieval_metrics(oracle_ranks[mask], ks).items()})
    return _finite(report)


def _finite(report):
    # JSON has no NaN; an undefined metric (no cold clicks, one class) becomes None.
    return {s: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
            for s, d in report.items()}
