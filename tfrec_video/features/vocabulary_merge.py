"""`merge_vocabularies`: yesterday's vocabularies grown with today's data window.

A warm-started model (`tfrec_video.training.warm_start`) keeps the rows of its
parent's embedding tables. So its vocabularies are the parent's, in the
parent's order, with the ids first seen in the new window appended after them:

    users:  [parent ids, in their rows]  +  [new ids, most frequent in the window first]
    videos: the same

**Eviction.** With a cap (`max_users`, `max_videos`) and more ids than it
allows, the rule decides which ids lose their row (they fall back into the
hashed OOV buckets, as any unknown id does):

* `"recency"` (default): keep the ids seen most recently. Every id records the
  last window it was seen in (`Vocabularies.user_last_window` /
  `video_last_window`); ids of the new window come first (the most frequent in
  it first), then older ids, the most recently seen first, ties in their
  parent order (the first generation's ids by frequency, then each later
  window's additions in the order they came). Right for a catalog whose videos age out.
* `"frequency"`: keep the ids with the most impressions in the counts the
  model keeps (`counts`), ties by id. Right for a long-lived catalog.

Kept ids keep their relative order; the table is compacted over evicted rows.

**Counts** (the ranking head's `ClickCounts`, and the eviction by frequency):

* `"accumulate"` (default): the parent's counts plus the window's, so the
  counts describe all data so far, as a full retrain's would.
* `"refresh"`: the window's counts alone (ids not seen in it count 0), for
  popularity that drifts faster than the models are refreshed.

The logQ correction's sampling probabilities always come from the window's
counts (`Vocabularies.video_window_counts`), whatever `counts` says: the
correction removes the bias of how the training batches were drawn, and a
warm start's batches are the window's. (Measured on the built-in daily
service, 5 warm-started days: with accumulated counts in the correction, the
next day's Recall@100 fell 6-15% below a full retrain's.)

The title WordPiece vocabulary and the PCA statistics are the `window`'s: the
caller (`warm_start`) gives `adapt` the parent's to keep them, or lets it learn
new ones. The duration normalisation is always the parent's (the towers'
weights read it). Categories and devices are merged like ids, never evicted.

Example:

>>> parent = Vocabularies(user_ids=["u1", "u2"], video_ids=["a", "b"], video_counts=[5, 3], title_tokens=["[PAD]"])
>>> window = Vocabularies(user_ids=["u3", "u1"], video_ids=["c", "a"], video_counts=[4, 2], title_tokens=["[PAD]"])
>>> merged, summary = merge_vocabularies(parent, window, max_videos=2)
>>> merged.user_ids, merged.video_ids, merged.video_counts
(['u1', 'u2', 'u3'], ['a', 'c'], [7, 4])
>>> summary["videos"]
{'kept': 1, 'added': 1, 'evicted': 1}
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfrec_video.errors import ConfigError
from tfrec_video.features.vocabulary import Vocabularies, click_rate_prior

EVICTION_RULES = ("recency", "frequency")
COUNT_RULES = ("accumulate", "refresh")

# Vocabulary fields whose values decide the model's inputs: a window that differs in one cannot warm start.
# Each: (the feature it is about, what it says of it).
_SAME_INPUTS = {"history_length": ("history", "the history length"),
                "image_dim": ("image_embedding", "the width of image_embedding"),
                "audio_dim": ("audio_embedding", "the width of audio_embedding"),
                "title_embedding_dim": ("title_embedding", "the width of title_embedding"),
                "has_hour": ("hour", "whether impressions carry hour")}


def _present(v: Vocabularies) -> Dict[str, bool]:
    return {"category": v.categories is not None, "device": v.devices is not None,
            "duration_s": v.duration_log_mean is not None, "clicked": v.user_clicks is not None}


def check_same_inputs(parent: Vocabularies, window: Vocabularies) -> None:
    """Raises `ConfigError` naming the feature when `window`'s data feeds the model other inputs than `parent`'s."""
    for name, (feature, what) in _SAME_INPUTS.items():
        if getattr(parent, name) != getattr(window, name):
            raise ConfigError(f"warm start: {what} differs: the parent model was trained with "
                              f"{getattr(parent, name)!r}, the new data has {getattr(window, name)!r} "
                              f"(feature {feature!r}); a model's inputs cannot change between generations: "
                              "train from scratch.")
    before, now = _present(parent), _present(window)
    for feature in before:
        if before[feature] != now[feature]:
            raise ConfigError(f"warm start: the parent model was trained {'with' if before[feature] else 'without'} "
                              f"{feature!r}, the new data {'has' if now[feature] else 'lacks'} it; a model's inputs "
                              "cannot change between generations: train from scratch.")


def _merge_ids(parent_ids: Sequence[str], parent_last: Sequence[int], window_ids: Sequence[str], window: int,
               cap: Optional[int], eviction: str, totals: Dict[str, int]) -> Tuple[List[str], List[int], dict]:
    """`(ids, last_window, summary)`: the parent's ids then the window's new ones, capped by `eviction`."""
    seen = {v: rank for rank, v in enumerate(window_ids)}
    known = set(parent_ids)
    added = [v for v in window_ids if v not in known]
    ids = list(parent_ids) + added
    last = {v: (window if v in seen else int(w)) for v, w in zip(parent_ids, parent_last)}
    last.update({v: window for v in added})
    kept = set(ids)
    if cap is not None and len(ids) > cap:
        if eviction == "recency":
            order = {v: i for i, v in enumerate(parent_ids)}
            key = {v: (-last[v], seen[v] if v in seen else len(seen) + order[v]) for v in ids}
        else:
            key = {v: (-totals.get(v, 0), v) for v in ids}
        kept = set(sorted(ids, key=key.__getitem__)[:cap])
        ids = [v for v in ids if v in kept]
    summary = {"kept": sum(v in kept for v in parent_ids), "added": sum(v in kept for v in added),
               "evicted": len(parent_ids) + len(added) - len(ids)}
    return ids, [last[v] for v in ids], summary


def _counts(ids: Sequence[str], parent_ids, parent_values, window_ids, window_values, rule: str) -> List[int]:
    window_map = dict(zip(window_ids, window_values))
    parent_map = dict(zip(parent_ids, parent_values)) if rule == "accumulate" else {}
    return [int(parent_map.get(v, 0)) + int(window_map.get(v, 0)) for v in ids]


def _merged_list(parent: Optional[List[str]], window: Optional[List[str]]) -> Optional[List[str]]:
    if parent is None:
        return None
    known = set(parent)
    return list(parent) + [v for v in (window or []) if v not in known]


def merge_vocabularies(parent: Vocabularies, window: Vocabularies, *, max_users: Optional[int] = None,
                       max_videos: Optional[int] = None, eviction: str = "recency",
                       counts: str = "accumulate") -> Tuple[Vocabularies, dict]:
    """The parent's vocabularies grown with a new window's (see module docstring).

    Args:
      parent: the previous model's `Vocabularies`.
      window: `adapt`'s vocabularies of the new window, uncapped (every id of the window).
      max_users: cap on user ids with their own row, or None.
      max_videos: cap on video ids with their own row, or None.
      eviction: `"recency"` or `"frequency"`: which ids lose their row past a cap.
      counts: `"accumulate"` or `"refresh"`.

    Returns:
      `(vocabularies, summary)`; `summary` is `{"users": {"kept", "added", "evicted"}, "videos": {...},
      "window": n}`, for the run's report.

    Raises:
      ConfigError: an unknown rule, frequency eviction past a cap without counts, or data that feeds the
        model other inputs (`check_same_inputs`).
    """
    if eviction not in EVICTION_RULES:
        raise ConfigError(f"warm start: eviction must be one of {list(EVICTION_RULES)}, got {eviction!r}.")
    if counts not in COUNT_RULES:
        raise ConfigError(f"warm start: counts must be one of {list(COUNT_RULES)}, got {counts!r}.")
    check_same_inputs(parent, window)
    index = parent.window + 1
    merged: Dict[str, object] = {}
    summary: Dict[str, object] = {"window": index}
    for kind, cap in (("user", max_users), ("video", max_videos)):
        parent_ids, window_ids = getattr(parent, f"{kind}_ids"), getattr(window, f"{kind}_ids")
        impressions = "video_counts" if kind == "video" else "user_impressions"
        clicks = f"{kind}_clicks"
        pairs = [(impressions, getattr(parent, impressions), getattr(window, impressions)),
                 (clicks, getattr(parent, clicks), getattr(window, clicks))]
        totals = {}
        if eviction == "frequency" and cap is not None and (pairs[0][1] is None or pairs[0][2] is None):
            # Without counts every id would tie and the cap would fall by id order: say so instead.
            raise ConfigError(f"warm start: eviction='frequency' ranks {kind}s by `{impressions}`, which the "
                              f"{'parent' if pairs[0][1] is None else 'window'}'s vocabularies do not have (a model "
                              f"saved by an older tfrec_video); use eviction='recency'.")
        if pairs[0][1] is not None and pairs[0][2] is not None:
            totals = dict(zip(parent_ids, pairs[0][1])) if counts == "accumulate" else {}
            for v, n in zip(window_ids, pairs[0][2]):
                totals[v] = totals.get(v, 0) + int(n)
        parent_last = getattr(parent, f"{kind}_last_window") or [parent.window] * len(parent_ids)
        ids, last, summary[f"{kind}s"] = _merge_ids(parent_ids, parent_last, window_ids, index, cap, eviction,
                                                    totals)
        merged[f"{kind}_ids"], merged[f"{kind}_last_window"] = ids, last
        for name, before, now in pairs:
            merged[name] = (None if before is None or now is None else
                            _counts(ids, parent_ids, before, window_ids, now, counts))
        if kind == "video":  # the logQ correction's: the window's batches are what it corrects
            merged["video_window_counts"] = _counts(ids, parent_ids, [], window_ids, window.video_counts, "refresh")
    if merged["user_clicks"] is not None and counts == "accumulate":
        rate, user_strength = click_rate_prior(np.array(merged["user_impressions"]), np.array(merged["user_clicks"]))
        _, video_strength = click_rate_prior(np.array(merged["video_counts"]), np.array(merged["video_clicks"]))
        merged.update(click_rate=rate, user_prior_strength=user_strength, video_prior_strength=video_strength)
    vocabularies = dataclasses.replace(
        window, **merged, window=index,
        categories=_merged_list(parent.categories, window.categories),
        devices=_merged_list(parent.devices, window.devices),
        duration_log_mean=parent.duration_log_mean, duration_log_std=parent.duration_log_std)
    return vocabularies, summary
