"""The evaluation report: retrieval over the whole catalog, ranking on every impression.

Retrieval is measured on the test split's clicked impressions. For each one the
query embedding is scored against every catalog video (`CatalogRanker`, exact),
and the rank of the clicked video gives Recall@K and NDCG@K (one relevant item,
so NDCG@K = 1/log2(rank + 2) when rank < K). Ranking is measured on all test
impressions: AUC and log-loss of the click probability.

Each retrieval metric is also reported on two subsets of test clicks:

* `cold_start`: the clicked video never appears in the training impressions;
* `warm_start`: it does.

Baselines computed on the same clicks:

* `popularity`: rank every video by its training click count (same list for all);
* trained retrieval baselines passed as `baselines={name: model}`, such as the
  ID-only two-tower (`tfrec_video.models.id_only`), which `tfrec-video
  quickstart` and `tfrec-video evaluate` pass as `id_only`: their
  `id_only_recall@K` and `id_only_ndcg@K` sit beside the model's keys in the
  `retrieval`, `cold_start` and `warm_start` sections;
* the oracle, when the built-in dataset's ground truth is present: rank by the
  true click logit (Recall@K that no model can beat in expectation), and AUC of
  the true click probability.

With `leave_one_out=True` the report also has a `leave_one_out` section: the
protocol of public interaction datasets (each test user's last click, ranked
against the whole catalog with the user's earlier videos removed; HR@K and
NDCG@K of the served list, of retrieval, of every baseline and of popularity),
kept apart from the impression sections above and named by its `protocol` key
(`tfrec_video.evaluation.leave_one_out`). `counts.protocol` names the
impression protocol.

`format_table` prints a report's headline metrics and `write_report` writes it
as `report.json`.

Example:

>>> report = evaluate(model, catalog, test, train_clicks)   # doctest: +SKIP
>>> print(format_table(report))                             # doctest: +SKIP
"""

import json
import math
import os
import re
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import as_strings
from tfrec_video.evaluation.leave_one_out import DEFAULT_LOO_KS, leave_one_out_events, leave_one_out_metrics
from tfrec_video.evaluation.metrics import DEFAULT_KS, auc, calibration, logloss, recall_curve, retrieval_metrics
from tfrec_video.evaluation.ranking import CatalogRanker, embed_catalog, ranks_from_scores
from tfrec_video.evaluation.served import served_lists

# Scorer names of evaluate(); a baseline may not take one.
_RESERVED = ("model", "oracle", "popularity")


def _embedding_ranker(video_matrix: np.ndarray, queries: Callable) -> Callable:
    """Ranks of the clicks' true videos by dot products of their query embeddings with `video_matrix`."""
    ranker = CatalogRanker(video_matrix)
    return lambda batch, out, rows, target: ranker(queries(batch, out)[rows], target)


def _score_ranker(scores: Callable) -> Callable:
    """Ranks of the clicks' true videos from a `(batch, out, rows) -> [clicks, catalog]` score function."""
    return lambda batch, out, rows, target: ranks_from_scores(scores(batch, out, rows), target)


def _query_embedder(model) -> Callable:
    """`(batch, out) -> [batch, dim]` query embeddings of a baseline, from the features it declares."""
    names = list(model.query_feature_names)
    embed = tf.function(lambda f: model.embed_queries(f, training=False))

    def queries(batch, out):
        missing = [n for n in names if n not in batch]
        if missing:
            raise ValueError(f"evaluate: the test impressions lack {missing}, which a baseline's queries need.")
        return embed({n: batch[n] for n in names}).numpy()

    return queries


def _oracle_scorer(truth, index_of: Mapping[str, int], num_videos: int) -> Callable:
    """Scores `[clicks, catalog]`: the true click logits of the clicks' users in their context."""
    # Map the truth's catalog order onto ours; a catalog video the truth lacks can never be the oracle's pick.
    column = np.array([index_of.get(v, -1) for v in as_strings(truth.video_ids)])
    present = column >= 0

    def score(batch, out, rows):
        context = {name: (batch[name].numpy()[rows] if name in batch else None) for name in ("hour", "device")}
        logits = truth.click_logits(as_strings(batch["user_id"].numpy()[rows]), None, **context)
        scores = np.full((len(rows), num_videos), -np.inf)
        scores[:, column[present]] = logits[:, present]
        return scores

    return score


def evaluate(
    model,
    catalog: Mapping[str, np.ndarray],
    test: tf.data.Dataset,
    train_video_ids: Iterable[str],
    train_click_counts: Optional[Mapping[str, int]] = None,
    truth=None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    baselines: Optional[Mapping[str, object]] = None,
    served_k: Optional[int] = 100,
    served_n: int = 10,
    leave_one_out: bool = False,
    leave_one_out_ks: Sequence[int] = DEFAULT_LOO_KS,
) -> Dict[str, Dict[str, float]]:
    """Evaluates a trained model on test impressions.

    The model is duck-typed, so a Keras `VideoRecModel` and an exported
    SavedModel (`tfrec_video.serving.loaded.ExportedModel`) go through the same code.
    It needs `video_feature_names`, `embed_videos(features, training=False)`
    (`[batch, dim]`), and `model(features, training=False)` returning a dict
    with `query_embedding` (`[batch, dim]`) and `click_probability` (`[batch]`)
    for a batch of impressions.

    The model, every baseline, popularity and the oracle rank the whole catalog
    for the same test clicks through one code path: each is a function from a
    batch of clicks to scores over the catalog, and one loop turns those scores
    into ranks.

    Args:
      model: a trained model (see above).
      catalog: the catalog as column arrays (all videos that can be retrieved).
      test: unbatched test impressions with catalog features joined.
      train_video_ids: ids of videos in the training impressions (defines cold start).
      train_click_counts: clicks per video in training, for the popularity baseline.
      truth: an optional `tfrec_video.datasets.GroundTruth` for oracle metrics.
        Its test click probabilities must be aligned with `test`'s order.
      ks: cut-offs for Recall@K and NDCG@K.
      batch_size: evaluation batch size.
      baselines: optional retrieval baselines by name, such as
        `{"id_only": IdOnlyTwoTower}`. Each needs `query_feature_names`,
        `video_feature_names`, `embed_queries` and `embed_videos`; baseline `b`
        adds `b_recall@K` and `b_ndcg@K` to the `retrieval`, `cold_start` and
        `warm_start` sections. Names are letters, digits and `_`, and not
        `model`, `oracle` or `popularity`.
      served_k: candidates retrieved before ranking in the served list (the
        export's `k`), or None to skip the `serving` section. The model must
        then have `encode_catalog`, `encode_queries` and `rank_candidates` (a
        `VideoRecModel`) or `served_lists` (an `ExportedModel`, whose own `k`
        and `n` count); see `tfrec_video.evaluation.served`.
      served_n: the length of the served list.
      leave_one_out: add the `leave_one_out` section (see the module docstring):
        the model's served list there is `served_k` candidates cut to
        `max(leave_one_out_ks)`, the request's history left out.
      leave_one_out_ks: its cut-offs.

    Returns:
      A nested dict with `retrieval`, `ranking`, `cold_start`, `warm_start`,
      `popularity` and `counts` sections (oracle keys present when `truth` is given),
      `serving` (`hr@n` of the served list, beside `retrieval`'s `hr@n` of
      retrieval's own top n, on the same clicks), `ranking.ece` (the expected
      calibration error), and the data of the report's plots: `recall_curve`
      (`recall_curve`) and `calibration` (`calibration`). A model with a watch head, on test data
      with `watch_fraction`, adds `watch` (`watch_metrics` over the clicked rows, and with `truth`
      the same of the true expected watched fraction: `oracle_correlation`, ...).
    """
    baselines = dict(baselines or {})
    for name in baselines:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or name in _RESERVED:
            raise ValueError(f"evaluate: a baseline name must be letters, digits and '_', starting with a letter, "
                             f"and not one of {_RESERVED}; got {name!r}.")
    catalog_ids = as_strings(catalog["video_id"])
    index_of = {v: i for i, v in enumerate(catalog_ids)}
    warm = set(as_strings(list(train_video_ids)).tolist())
    popularity = np.zeros(len(catalog_ids), np.float64)
    for vid, count in (train_click_counts or {}).items():
        if vid in index_of:
            popularity[index_of[vid]] = count
    # Break popularity ties by catalog order so the baseline is deterministic.
    popularity = popularity - np.arange(len(catalog_ids)) * 1e-9
    max_k = max(ks)

    # ranker(batch, model outputs, rows of the batch's retrievable clicks, their catalog rows) -> ranks.
    rankers = {"model": _embedding_ranker(embed_catalog(model, catalog), lambda batch, out: out["query_embedding"].numpy())}
    for name, baseline in baselines.items():
        rankers[name] = _embedding_ranker(embed_catalog(baseline, catalog), _query_embedder(baseline))
    rankers["popularity"] = _score_ranker(
        lambda batch, out, rows: np.broadcast_to(popularity, (len(rows), len(popularity))))
    if truth is not None:
        rankers["oracle"] = _score_ranker(_oracle_scorer(truth, index_of, len(catalog_ids)))

    lists = None if served_k is None else served_lists(model, catalog, served_k, served_n)
    hits = {"retrieved": [], "served": [], "width": None}
    forward = tf.function(lambda f: model(f, training=False))
    probs, labels, cold_flags = [], [], []
    watched = {"predicted": [], "observed": [], "rows": []}  # a watch head's clicked rows
    seen = 0
    ranks = {name: [] for name in rankers}
    for batch in test.batch(batch_size):
        out = forward(batch)
        clicked = batch["clicked"].numpy().reshape(-1).astype(bool)
        probs.append(np.asarray(out["click_probability"]).reshape(-1))
        labels.append(clicked.astype(np.int64))
        if "expected_watch_fraction" in out and "watch_fraction" in batch:
            watched["predicted"].append(np.asarray(out["expected_watch_fraction"]).reshape(-1)[clicked])
            watched["observed"].append(batch["watch_fraction"].numpy().reshape(-1)[clicked])
            watched["rows"].append(seen + np.flatnonzero(clicked))
        seen += len(clicked)
        if not clicked.any():
            continue
        vids = as_strings(batch["video_id"].numpy()[clicked])
        target = np.array([index_of.get(v, -1) for v in vids])
        known = target >= 0  # a clicked video absent from the catalog cannot be retrieved
        rows, target = np.flatnonzero(clicked)[known], target[known]
        for name, rank in rankers.items():
            ranks[name].append(rank(batch, out, rows, target))
        if lists is not None:
            retrieved, served = lists({name: tf.gather(value, rows) for name, value in batch.items()})
            hits["retrieved"].append((retrieved == target[:, None]).any(axis=1))
            hits["served"].append((served == target[:, None]).any(axis=1))
            hits["width"] = int(served.shape[1])
        cold_flags.append(np.array([v not in warm for v in vids[known]], bool))
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    cat = (lambda xs, dtype=np.int64: np.concatenate(xs) if xs else np.zeros(0, dtype))
    ranks = {name: cat(r) for name, r in ranks.items()}
    model_ranks = ranks["model"]
    cold = cat(cold_flags, bool).astype(bool)

    report = {
        "retrieval": retrieval_metrics(model_ranks, ks),
        "ranking": {"auc": auc(labels, probs), "logloss": logloss(labels, probs)},
        "cold_start": {**retrieval_metrics(model_ranks[cold], ks), "clicks": int(cold.sum())},
        "warm_start": {**retrieval_metrics(model_ranks[~cold], ks), "clicks": int((~cold).sum())},
        "popularity": retrieval_metrics(ranks["popularity"], ks),
        "counts": {"test_impressions": int(len(labels)), "test_clicks": int(len(model_ranks)),
                   "catalog_videos": int(len(catalog_ids)), "max_k": int(max_k)},
        "recall_curve": recall_curve(model_ranks, len(catalog_ids)),
        "calibration": calibration(labels, probs),
    }
    report["ranking"]["ece"] = report["calibration"]["ece"]
    if lists is not None:
        n = hits["width"] or served_n  # an export's own n, else served_n (at most the catalog size)
        retrieved_hits, served_hits = cat(hits["retrieved"], bool), cat(hits["served"], bool)
        report["retrieval"][f"hr@{n}"] = float(retrieved_hits.mean()) if len(retrieved_hits) else float("nan")
        report["serving"] = {f"hr@{n}": float(served_hits.mean()) if len(served_hits) else float("nan"),
                             "k": int(served_k), "n": n, "clicks": int(len(served_hits))}
    if truth is not None:
        true_p = np.asarray(truth.test_click_prob(), np.float64)
        if len(true_p) != len(labels):
            raise ValueError(f"evaluate: the ground truth has {len(true_p)} test impressions, the test data {len(labels)}.")
        report["ranking"]["oracle_auc"] = auc(labels, true_p)
        report["ranking"]["oracle_logloss"] = logloss(labels, true_p)
    if watched["rows"]:
        report["watch"] = watch_metrics(cat(watched["observed"], np.float64), cat(watched["predicted"], np.float64))
        if truth is not None and getattr(truth, "quality", None) is not None:
            true_mean = np.asarray(truth.test_watch_mean(), np.float64)[cat(watched["rows"])]
            oracle = watch_metrics(cat(watched["observed"], np.float64), true_mean)
            report["watch"].update({f"oracle_{name}": value for name, value in oracle.items()})
    report["counts"]["protocol"] = "impressions"
    if leave_one_out:
        report["leave_one_out"] = _leave_one_out(model, catalog, test, warm, baselines, popularity, served_k,
                                                 leave_one_out_ks, batch_size)
    compared = list(baselines) + (["oracle"] if truth is not None else [])
    for section, mask in (("retrieval", slice(None)), ("cold_start", cold), ("warm_start", ~cold)):
        for name in compared:
            report[section].update(retrieval_metrics(ranks[name][mask], ks, prefix=f"{name}_"))
    return _finite(report)


def watch_metrics(observed: np.ndarray, predicted: np.ndarray) -> Dict[str, float]:
    """A watch head's test metrics over clicked rows: `logloss` (its training loss: the logistic loss on the
    watched fraction), `mae`, `correlation` (Pearson) and `auc` (telling clicks watched more than the
    median from the rest), and `clicks`."""
    observed, predicted = np.clip(observed, 0.0, 1.0), np.clip(predicted, 1e-7, 1 - 1e-7)
    if len(observed) == 0:
        return {"clicks": 0}
    spread = observed.std() > 0 and predicted.std() > 0
    return {"logloss": float(-np.mean(observed * np.log(predicted) + (1 - observed) * np.log(1 - predicted))),
            "mae": float(np.mean(np.abs(observed - predicted))),
            "correlation": float(np.corrcoef(observed, predicted)[0, 1]) if spread else float("nan"),
            "auc": auc((observed > np.median(observed)).astype(np.int64), predicted), "clicks": int(len(observed))}


def _leave_one_out(model, catalog, test, warm, baselines, popularity, served_k, ks, batch_size):
    names = set(model.query_feature_names)
    for baseline in baselines.values():
        names |= set(baseline.query_feature_names)
    events = leave_one_out_events(test, names)
    depth = max(ks)
    lists = None if served_k is None else served_lists(model, catalog, max(int(served_k), depth), depth,
                                                       exclude_seen=True)
    return leave_one_out_metrics(model, catalog, events, warm, baselines=baselines, popularity=popularity,
                                 served_lists_fn=lists, ks=ks, batch_size=batch_size)


def _finite(report):
    # JSON has no NaN; an undefined metric (no cold clicks, one class) becomes None.
    return {s: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
            for s, d in report.items()}


# The headline rows of the metrics table printed by `tfrec-video quickstart` and `evaluate`.
TABLE_ROWS = (
    ("retrieval", "recall@100"), ("retrieval", "oracle_recall@100"), ("retrieval", "id_only_recall@100"),
    ("retrieval", "ndcg@10"), ("retrieval", "hr@10"), ("serving", "hr@10"), ("ranking", "auc"),
    ("ranking", "oracle_auc"), ("ranking", "mlp_baseline_auc"), ("ranking", "logloss"), ("ranking", "ece"),
    ("cold_start", "recall@100"), ("cold_start", "id_only_recall@100"), ("warm_start", "recall@100"),
    ("popularity", "recall@100"),
)


# The leave-one-out rows, printed when the report has that section.
LEAVE_ONE_OUT_ROWS = ("hr@10", "ndcg@10", "retrieval_hr@10", "history_mean_hr@10", "history_mean_ndcg@10",
                      "id_only_hr@10", "id_only_ndcg@10", "popularity_hr@10", "cold_hr@50")


def format_table(report: Mapping[str, Mapping[str, float]], rows: Sequence = TABLE_ROWS) -> str:
    """The report's headline metrics as a two-column text table (`n/a` where a value is missing or None)."""
    cells = []
    served_n = report.get("serving", {}).get("n")
    for section, key in rows:
        if key.startswith("hr@") and served_n is not None:
            key = f"hr@{served_n}"  # the hit rates are at the served list's length
        cells.append((f"{section}.{key}", report.get(section, {}).get(key)))
    loo = report.get("leave_one_out", {})
    cells += [(f"leave_one_out.{key}", loo[key]) for key in LEAVE_ONE_OUT_ROWS if key in loo]
    width = max([32] + [len(name) + 2 for name, _ in cells])
    lines = [f"{'metric':<{width}}{'value':>10}", "-" * (width + 10)]
    lines += [f"{name:<{width}}{'n/a' if value is None else format(value, '.4f'):>10}" for name, value in cells]
    return "\n".join(lines)


def write_report(report: Mapping, path: str) -> str:
    """Writes `report` as JSON to `path` atomically (a temporary file renamed over it); returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)
    return path
