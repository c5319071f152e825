"""The leave-one-out protocol: each user's last click, ranked against the whole catalog.

Public interaction datasets (micro-video, movie and shopping logs) are reported
this way, and it is how a new user will judge the package on their data:

* **one event per user**: the user's last clicked test impression (the latest
  `timestamp`; the last in file order without one). Its `history` holds what
  the user watched before;
* **full ranking**: the clicked video is ranked against every catalog video,
  not against the videos that happened to be shown (the impression protocol
  of `evaluate`, whose `retrieval` section counts every test click);
* **the user's earlier videos removed**: the videos in the event's `history`
  are left out of the ranking, as a service leaves them out of what it serves
  (the export's `serving_default` does). An event whose clicked video is in its
  own history (a re-watch) cannot be ranked under this rule and is skipped
  (`repeat_clicks_skipped`);
* **HR@K and NDCG@K**: one relevant video, so HR@K is the share of events whose
  video ranks in the top K, and NDCG@K averages `1 / log2(rank + 2)` over hits.

`leave_one_out_metrics` scores every list on the same events and returns one
`report.json` section, `leave_one_out`:

* `hr@K`, `ndcg@K`: the model's served list (retrieve `served_k`, rank, order,
  the history left out: `evaluation.served.served_lists(..., exclude_seen=True)`),
  what a user of the export is shown; a retrieval-only model has its
  retrieval ranking here;
* `retrieval_hr@K`, `retrieval_ndcg@K`: the model's retrieval stage alone;
* `<baseline>_hr@K`, `<baseline>_ndcg@K`: each trained baseline (the ID-only
  and the history-mean two-towers) and `popularity`;
* `cold_hr@K` and `<name>_cold_hr@K`: on the events whose video was never in
  the training impressions;
* `protocol` (`"leave_one_out"`), `events`, `cold_events`, `events_without_history`,
  `repeat_clicks_skipped`.

Example:

>>> events = leave_one_out_events(test, ["user_id", "history", "hour", "device"])   # doctest: +SKIP
>>> section = leave_one_out_metrics(model, catalog, events, train_video_ids)       # doctest: +SKIP
>>> section["protocol"], section["hr@10"]                                            # doctest: +SKIP
('leave_one_out', 0.061)
"""

import weakref
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import as_strings
from tfrec_video.evaluation.candidates import catalog_index, catalog_rows, mask_rows
from tfrec_video.evaluation.metrics import retrieval_metrics
from tfrec_video.evaluation.ranking import embed_catalog, ranks_from_scores

PROTOCOL = "leave_one_out"
_EMBED_QUERIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
DEFAULT_LOO_KS = (10, 50)


def leave_one_out_events(test: tf.data.Dataset, names: Iterable[str], batch_size: int = 4096) -> Dict[str, np.ndarray]:
    """Each user's last clicked impression of `test`, as column arrays (one row per user).

    Args:
      test: unbatched test impressions (with `user_id`, `video_id`, `clicked`,
        and `timestamp` when the data has it).
      names: the other columns to keep (the query features of every model
        that will be scored).
      batch_size: rows read at a time.

    Returns:
      `{name: array}` for `names` plus `user_id` and `video_id`, ordered by user id.
    """
    keep = sorted(set(names) | {"user_id", "video_id"})
    columns: Dict[str, list] = {}
    order: list = []
    for batch in test.batch(batch_size).as_numpy_iterator():
        clicked = np.asarray(batch["clicked"]).reshape(-1).astype(bool)
        if not clicked.any():
            continue
        missing = [n for n in keep if n not in batch]
        if missing:
            raise ValueError(f"leave-one-out: the test impressions lack {missing}, which the models' queries need.")
        for name in keep:
            columns.setdefault(name, []).append(np.asarray(batch[name])[clicked])
        order.append(np.asarray(batch["timestamp"]).reshape(-1)[clicked] if "timestamp" in batch
                     else np.zeros(int(clicked.sum()), np.int64))
    if not order:
        return {name: np.zeros((0,), object) for name in keep}
    data = {name: np.concatenate(values) for name, values in columns.items()}
    time = np.concatenate(order)
    users = as_strings(data["user_id"])
    position = np.arange(len(users))
    # The last click of each user: sort by (user, time, file order) and take each user's last row.
    idx = np.lexsort((position, time, users))
    last = idx[np.r_[users[idx][1:] != users[idx][:-1], True]]
    return {name: values[last] for name, values in data.items()}


def _masked_ranks(scores: np.ndarray, target: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Ranks of `target` with each row's `seen` catalog rows (-1: none) left out, by the serving rule."""
    masked = mask_rows(tf.constant(np.asarray(scores, np.float32)), tf.constant(seen, tf.int64)).numpy()
    return ranks_from_scores(masked, target)


def _query_embedder(model, features: Mapping[str, np.ndarray]) -> Callable:
    """`model.embed_queries` traced once per model and feature signature (any batch size), held weakly:
    the history-mean baseline is scored every epoch, and each new trace would cost seconds."""
    specs = tuple(sorted((name, tf.as_dtype(np.asarray(v).dtype if np.asarray(v).dtype != object else tf.string).name,
                          np.shape(v)[1:]) for name, v in features.items()))
    traced = _EMBED_QUERIES.setdefault(model, {})
    if specs not in traced:
        ref = weakref.ref(model)
        signature = {name: tf.TensorSpec((None,) + tuple(shape), dtype, name=name) for name, dtype, shape in specs}
        traced[specs] = tf.function(lambda f: ref().embed_queries(f, training=False), input_signature=[signature])
    return traced[specs]


def _embedding_scorer(model, catalog: Mapping[str, np.ndarray], batch_size: int) -> Callable:
    videos = embed_catalog(model, catalog).astype(np.float32)
    names = list(model.query_feature_names)

    def scores(events, start, stop):
        features = {n: events[n][start:stop] for n in names}
        embed = _query_embedder(model, features)
        return embed({n: tf.constant(v) for n, v in features.items()}).numpy() @ videos.T

    return scores


def _served_ranks(lists: Callable, names: Sequence[str], events, target: np.ndarray, batch_size: int):
    """Ranks from a served list (the target's position in it, or a huge rank when absent), and its length."""
    ranks, width = [], None
    for start in range(0, len(target), batch_size):
        _, served = lists({n: tf.constant(events[n][start:start + batch_size]) for n in names})
        served = np.asarray(served)
        width = int(served.shape[1])
        hit = served == target[start:start + batch_size, None]
        ranks.append(np.where(hit.any(axis=1), hit.argmax(axis=1), np.iinfo(np.int64).max // 2))
    return (np.concatenate(ranks) if ranks else np.zeros(0, np.int64)), width


def _hr(ranks: np.ndarray, ks: Sequence[int], prefix: str = "") -> Dict[str, float]:
    # The impression protocol's Recall@K of one relevant item is HR@K: the same numbers, the names of this protocol.
    return {key.replace("recall@", "hr@"): value for key, value in retrieval_metrics(ranks, ks, prefix).items()}


def leave_one_out_metrics(
    model,
    catalog: Mapping[str, np.ndarray],
    events: Mapping[str, np.ndarray],
    train_video_ids: Iterable[str],
    baselines: Optional[Mapping[str, object]] = None,
    popularity: Optional[np.ndarray] = None,
    served_lists_fn: Optional[Callable] = None,
    ks: Sequence[int] = DEFAULT_LOO_KS,
    batch_size: int = 1024,
) -> Dict[str, object]:
    """The `leave_one_out` section of a report (see the module docstring).

    Args:
      model: the trained model: `query_feature_names`, `video_feature_names`,
        `embed_queries` and `embed_videos` (a `VideoRecModel`, an
        `ExportedModel` or a retrieval-only baseline).
      catalog: the catalog as column arrays.
      events: `leave_one_out_events` of the test impressions.
      train_video_ids: ids of videos in the training impressions (cold events are the others).
      baselines: retrieval baselines by name, scored the same way.
      popularity: a score per catalog row for the `popularity` baseline (training clicks), or None.
      served_lists_fn: `served_lists(model, catalog, k, n, exclude_seen=True)`'s function for
        the model's served list (its `n` at least `max(ks)`), or None to score the retrieval
        ranking as the model's list.
      ks: cut-offs of HR@K and NDCG@K.
      batch_size: events scored at a time.

    Returns:
      The section as a dict of floats and counts.
    """
    catalog_ids = as_strings(catalog["video_id"])
    index_of = catalog_index(catalog_ids)
    target = catalog_rows(index_of, events["video_id"]) if len(events["video_id"]) else np.zeros(0, np.int64)
    history = events.get("history")
    seen = (catalog_rows(index_of, history) if history is not None and len(target)
            else np.full((len(target), 0), -1, np.int64))
    if seen.ndim == 1:
        seen = seen[:, None]
    repeat = ((seen == target[:, None]) & (target[:, None] >= 0)).any(axis=1) if len(target) else np.zeros(0, bool)
    unknown = target < 0  # a clicked video outside the catalog cannot be ranked
    usable = ~unknown & ~repeat
    events = {name: np.asarray(values)[usable] for name, values in events.items()}
    target, seen = target[usable], seen[usable]
    warm = set(as_strings(list(train_video_ids)).tolist())
    cold = np.array([v not in warm for v in as_strings(events["video_id"])], bool)

    scorers = {"retrieval": _embedding_scorer(model, catalog, batch_size)}
    for name, baseline in (baselines or {}).items():
        scorers[name] = _embedding_scorer(baseline, catalog, batch_size)
    if popularity is not None:
        scorers["popularity"] = lambda ev, start, stop: np.broadcast_to(popularity, (stop - start, len(popularity)))
    ranks = {name: [] for name in scorers}
    for start in range(0, len(target), batch_size):
        stop = min(start + batch_size, len(target))
        for name, score in scorers.items():
            ranks[name].append(_masked_ranks(score(events, start, stop), target[start:stop], seen[start:stop]))
    ranks = {name: np.concatenate(r) if r else np.zeros(0, np.int64) for name, r in ranks.items()}
    width = None
    if served_lists_fn is not None:
        names = list(model.query_feature_names)
        ranks["model"], width = _served_ranks(served_lists_fn, names, events, target, batch_size)
    else:
        ranks["model"] = ranks["retrieval"]

    section: Dict[str, object] = {"protocol": PROTOCOL}
    # A served list shorter than K (an export's own n) says nothing of HR@K: those keys are None.
    model_ks = [k for k in ks if width is None or k <= width]
    for prefix, rows in (("", slice(None)), ("cold_", cold)):
        section.update({f"{prefix}{m}@{k}": None for k in ks if k not in model_ks for m in ("hr", "ndcg")})
        section.update(_hr(ranks["model"][rows], model_ks, prefix=prefix))
    for name, r in ranks.items():
        if name != "model":
            section.update(_hr(r, ks, prefix=f"{name}_"))
            section.update(_hr(r[cold], ks, prefix=f"{name}_cold_"))
    lengths = ((seen >= 0).sum(axis=1) if seen.size else np.zeros(len(target), np.int64))
    section.update({
        "events": int(len(target)), "cold_events": int(cold.sum()),
        "events_without_history": int((lengths == 0).sum()),
        "repeat_clicks_skipped": int(repeat.sum()), "unknown_videos_skipped": int(unknown.sum()),
        "catalog_videos": int(len(catalog_ids)), "list": "served" if served_lists_fn is not None else "retrieval",
        "served_n": width,
    })
    return section
