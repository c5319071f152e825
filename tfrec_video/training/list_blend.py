"""Fitting the served list's order (`ListBlend`) on validation clicks.

For every validation click whose video is among the `k` candidates retrieval
returns for that impression, the three candidate features of `ListBlend`
(retrieval score, log popularity, click logit) are collected. The weights `w >= 0`
maximise the conditional-logit likelihood that the clicked video scores highest,

    sum_clicks  w . x_clicked  -  log sum_candidates exp(w . x),

a concave objective solved by Newton's method (with a small ridge); a weight that
comes out negative is fixed at 0 and the rest refitted. The served order is then
the one of the fitted blend, retrieval's own order `(1, 0, 0)` and the click order
`(0, 0, 1)` with the best hit rate at `n` on the same clicks (in that order of
preference on ties). The three hit rates and the weights are returned.

Example:

>>> result = fit_list_blend(model, catalog, validation, k=100, n=10)   # doctest: +SKIP
>>> result["order"], result["hit_rates"]                                # doctest: +SKIP
('blend', {'blend': 0.132, 'retrieval': 0.113, 'clicks': 0.061})
"""

from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.evaluation.candidates import catalog_index, catalog_rows


def _conditional_logit(features: np.ndarray, target: np.ndarray, free: Sequence[int], ridge: float = 1e-4,
                       iterations: int = 50) -> np.ndarray:
    """Weights (zero outside `free`) maximising the likelihood of `target` among each row's candidates."""
    x = features[:, :, list(free)]                        # [clicks, k, f]
    w = np.zeros(len(free))
    w[0] = 1.0
    rows = np.arange(len(target))
    for _ in range(iterations):
        s = x @ w
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        mean = np.einsum("ck,ckf->cf", p, x)
        gradient = (x[rows, target] - mean).sum(axis=0) - ridge * w
        centred = x - mean[:, None, :]
        hessian = np.einsum("ck,ckf,ckg->fg", p, centred, centred) + ridge * np.eye(len(free))
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    out = np.zeros(features.shape[2])
    out[list(free)] = w
    return out


def _hit_rate(features: np.ndarray, target: np.ndarray, weights: np.ndarray, n: int, clicks: int) -> float:
    top = np.argsort(-(features @ weights), axis=1, kind="stable")[:, :n]
    return float((top == target[:, None]).any(axis=1).sum() / max(clicks, 1))


def fit_list_blend(model, catalog: Mapping[str, np.ndarray], data, k: int = 100, n: int = 10,
                   batch_size: int = 512) -> Dict[str, object]:
    """Fits and sets `model.list_blend` on the clicked rows of `data` (see module docstring).

    Args:
      model: a `VideoRecModel` built with `ModelConfig(list_blend=True)`.
      catalog: the catalog as column arrays (every video can be retrieved).
      data: unbatched validation impressions with `clicked` and catalog features joined.
      k: candidates retrieved (the export's `k`).
      n: the served list's length (the export's `n`).
      batch_size: clicks per batch.

    Returns:
      `{"order", "weights", "fitted_weights", "hit_rates", "clicks", "clicks_in_candidates"}`: the order
      chosen (`"blend"`, `"retrieval"` or `"clicks"`), its weights, and `hit_rates`, the hit rate at `n`
      over all validation clicks of each order.
    """
    if getattr(model, "list_blend", None) is None:
        raise ValueError("fit_list_blend: the model was built with ModelConfig(list_blend=False).")
    index_of = catalog_index(catalog["video_id"])
    parts = model.encode_catalog(catalog)
    embeddings = parts.pop("embedding")
    k = min(int(k), int(embeddings.shape[0]))
    n = min(int(n), k)

    @tf.function(reduce_retracing=True)
    def candidates(features):
        query = model.encode_queries(features, training=False)
        scores, rows = tf.math.top_k(tf.matmul(query["embedding"], embeddings, transpose_b=True), k=k)
        return rows, tf.stack([scores, tf.gather(parts["log_popularity"], rows),
                               model.rank_candidates(query, parts, rows)], axis=-1)

    names = list(model.query_feature_names)
    found, positions, clicks = [], [], 0
    for batch in data.filter(lambda row: row["clicked"] > 0).batch(batch_size):
        target = catalog_rows(index_of, batch["video_id"].numpy())
        clicks += len(target)
        rows, features = candidates({name: batch[name] for name in names})
        hit = rows.numpy() == target[:, None]
        inside = hit.any(axis=1)
        found.append(features.numpy()[inside])
        positions.append(hit[inside].argmax(axis=1))
    features = np.concatenate(found) if found else np.zeros((0, k, 3))
    target = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    orders = {"blend": None, "retrieval": np.array([1.0, 0.0, 0.0]), "clicks": np.array([0.0, 0.0, 1.0])}
    result = {"clicks": clicks, "clicks_in_candidates": int(len(target))}
    if len(target) < 20:  # too few clicks to fit three weights: keep the click order
        model.list_blend.set_weights_to(orders["clicks"])
        return dict(result, order="clicks", weights=orders["clicks"].tolist(), hit_rates=None)
    free = [0, 1, 2]
    weights = _conditional_logit(features, target, free)
    while (weights[free] < 0).any() and len(free) > 1:
        free = [i for i in free if weights[i] > 0] or [0]
        weights = _conditional_logit(features, target, free)
    if weights.min() >= 0 and weights.max() > 0:
        orders["blend"] = weights
    hit_rates = {name: _hit_rate(features, target, w, n, clicks) for name, w in orders.items() if w is not None}
    best = max(hit_rates, key=lambda name: (hit_rates[name], -list(orders).index(name)))
    model.list_blend.set_weights_to(orders[best])
    return dict(result, order=best, weights=[float(w) for w in orders[best]], fitted_weights=weights.tolist(),
                hit_rates=hit_rates)
