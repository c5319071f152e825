"""`Vocabularies`: everything the model learns from data before training starts.

An explicit adapt step (as with Keras preprocessing layers) reads the training
impressions and the catalog once and records:

* id vocabularies (users, videos seen in training, categories, devices), most
  frequent first, so that a cap keeps the useful ones;
* per-video impression counts, from which the retrieval task's logQ correction
  estimates each candidate's in-batch sampling probability;
* the WordPiece vocabulary of the catalog titles;
* normalisation statistics for `duration_s`, and the principal components of
  the media embeddings and of a precomputed `title_embedding`
  (`tfrec_video.features.pca`);
* which optional features the data has, so the towers build only what can be fed;
* the data's shape (`data_shape`): events per user and per video, the share of
  the catalog never seen in training, the click rate and the features present.
  The model's `"auto"` defaults follow it (`tfrec_video.models.data_rules`).

Video ids come from training impressions only, never from the whole catalog: a
video never seen in training must not own an untrained embedding row. It falls
into the hashed OOV buckets instead, and its content features carry it. That is
how cold start is served.

Example:

>>> import numpy as np
>>> catalog = {"video_id": np.array(["a", "b"], object), "title": np.array(["cat", "dog"], object)}
>>> impressions = {"user_id": np.array(["u1", "u2", "u1"], object),
...                "video_id": np.array(["a", "a", "b"], object), "clicked": np.array([1, 0, 1])}
>>> vocab = adapt(catalog, impressions, title_vocabulary_size=32)
>>> vocab.video_ids, vocab.video_counts
(['a', 'b'], [2, 1])
"""

import collections
import dataclasses
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from tfrec_video.data.join import UnknownVideoError
from tfrec_video.data.schema import as_strings
from tfrec_video.errors import DataValidationError, shorten
from tfrec_video.features.pca import fit_pca
from tfrec_video.features.wordpiece import learn_title_vocabulary


@dataclasses.dataclass
class Vocabularies:
    """Data-derived state of a model (see module docstring).

    Args:
      user_ids: user ids with their own embedding row, most frequent first.
      video_ids: video ids seen in training impressions, most frequent first.
      video_counts: impression count of each of `video_ids` (logQ correction).
      title_tokens: WordPiece vocabulary; `[PAD]` is id 0.
      categories: category vocabulary, or None when the catalog has none.
      devices: device vocabulary, or None when impressions have none.
      duration_log_mean: mean of log1p(duration_s), or None when absent.
      duration_log_std: std of log1p(duration_s), or None when absent.
      image_dim: length of `image_embedding`, or None when absent.
      audio_dim: length of `audio_embedding`, or None when absent.
      history_length: length of `history`, or None when absent.
      has_hour: whether impressions carry `hour`.
      image_pca: `fit_pca` statistics of the catalog's `image_embedding`, or None.
      audio_pca: the same for `audio_embedding`.
      catalog_size: number of videos in the catalog given to `adapt` (the
        model's in-graph `CatalogTable` has one row per catalog video).
      user_impressions: impressions of each of `user_ids` (the ranking head's
        count features), or None when the impressions had no `clicked` column.
      user_clicks: clicks of each of `user_ids`.
      video_clicks: clicks of each of `video_ids` (their impressions are `video_counts`).
      click_rate: the training click-through rate.
      user_prior_strength: the weight, in impressions, of the prior that shrinks a
        user's click rate towards `click_rate` (`click_rate_prior`).
      video_prior_strength: the same for videos.
      data_shape: the shape of the training data (`data_shape`), or None for
        vocabularies adapted before it was recorded.
      title_embedding_dim: length of the catalog's `title_embedding` (a
        pretrained text encoder's vector of the title), or None when absent.
      title_pca: `fit_pca` statistics of `title_embedding`, or None.
      window: how many data windows the model was warm-started over: 0 for one
        trained from scratch (`tfrec_video.features.vocabulary_merge`).
      user_last_window: the last window each of `user_ids` was seen in (None: all
        in `window`), which `"recency"` eviction reads.
      video_last_window: the same for `video_ids`.
      video_window_counts: impressions of each of `video_ids` in the latest window
        alone (None: `video_counts`). A warm-started model trains on that window's
        batches, so its logQ correction reads these, whatever `video_counts` keeps.
    """

    user_ids: List[str]
    video_ids: List[str]
    video_counts: List[int]
    title_tokens: List[str]
    categories: Optional[List[str]] = None
    devices: Optional[List[str]] = None
    duration_log_mean: Optional[float] = None
    duration_log_std: Optional[float] = None
    image_dim: Optional[int] = None
    audio_dim: Optional[int] = None
    history_length: Optional[int] = None
    has_hour: bool = False
    image_pca: Optional[dict] = None
    audio_pca: Optional[dict] = None
    catalog_size: Optional[int] = None
    user_impressions: Optional[List[int]] = None
    user_clicks: Optional[List[int]] = None
    video_clicks: Optional[List[int]] = None
    click_rate: Optional[float] = None
    user_prior_strength: Optional[float] = None
    video_prior_strength: Optional[float] = None
    data_shape: Optional[dict] = None
    title_embedding_dim: Optional[int] = None
    title_pca: Optional[dict] = None
    window: int = 0
    user_last_window: Optional[List[int]] = None
    video_last_window: Optional[List[int]] = None
    video_window_counts: Optional[List[int]] = None

    def __post_init__(self):
        for ids, name in (("video_ids", "video_counts"), ("video_ids", "video_clicks"),
                          ("user_ids", "user_impressions"), ("user_ids", "user_clicks"),
                          ("user_ids", "user_last_window"), ("video_ids", "video_last_window"),
                          ("video_ids", "video_window_counts")):
            values = getattr(self, name)
            if values is not None and len(values) != len(getattr(self, ids)):
                raise ValueError(f"Vocabularies: {len(getattr(self, ids))} {ids} but {len(values)} {name}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Vocabularies":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"Vocabularies.from_dict: unknown keys {sorted(unknown)}.")
        return cls(**dict(d))

    def popularity(self) -> np.ndarray:
        """Each of `video_ids`' share of every impression counted (`video_counts`: over all the windows
        of a warm-started model, not the latest one alone, whose zeros only mean "not shown lately")."""
        counts = np.asarray(self.video_counts, np.float64)
        total = counts.sum()
        return (counts / total).astype(np.float32) if total > 0 else counts.astype(np.float32)

    def candidate_sampling_probabilities(self) -> np.ndarray:
        """Probability that each of `video_ids` is a given in-batch candidate (of the batches of the
        latest window: `video_window_counts` when set)."""
        counts = np.asarray(self.video_counts if self.video_window_counts is None else self.video_window_counts,
                            np.float64)
        total = counts.sum()
        return (counts / total).astype(np.float32) if total > 0 else counts.astype(np.float32)


def click_rate_prior(impressions: np.ndarray, clicks: np.ndarray) -> Tuple[float, float]:
    """`(rate, strength)` of the Beta prior of per-id click rates, by the method of moments.

    The spread of the observed rates beyond what binomial noise explains is the
    true spread `tau^2`; a Beta prior with mean `rate` and that variance has
    `strength = rate (1 - rate) / tau^2 - 1` pseudo-impressions. Ids whose rates
    barely differ get a strong prior (their counts say little), ids that differ a
    lot a weak one. Clipped to [1, 10,000] impressions. With no impressions at
    all there is nothing to estimate: `(0.5, 1.0)`.

    Example:

    >>> rate, strength = click_rate_prior(np.array([100] * 50 + [10] * 50), np.array([10] * 50 + [1] * 50))
    >>> round(rate, 3), strength
    (0.1, 10000.0)
    """
    impressions = np.asarray(impressions, np.float64)
    clicks = np.asarray(clicks, np.float64)
    seen = impressions > 0
    total = impressions[seen].sum()
    rate = float(np.clip(clicks[seen].sum() / total, 1e-4, 1 - 1e-4)) if total else 0.5
    if not seen.any():
        return rate, 1.0
    spread = (np.sum(impressions[seen] * (clicks[seen] / impressions[seen] - rate) ** 2)
              - seen.sum() * rate * (1 - rate)) / total
    strength = rate * (1 - rate) / spread - 1 if spread > 0 else np.inf
    return rate, float(np.clip(strength, 1.0, 1e4))


def data_shape(user_impressions: np.ndarray, user_clicks: Optional[np.ndarray], video_impressions: np.ndarray,
               catalog_size: int, features: Iterable[str], video_clicks: Optional[np.ndarray] = None) -> dict:
    """The training data's shape, from per-user and per-video counts (every id, not a capped vocabulary).

    Args:
      user_impressions: impressions of each training user.
      user_clicks: clicks of each training user (None without `clicked`).
      video_impressions: impressions of each training video.
      catalog_size: videos in the catalog.
      features: the optional features present (catalog and impression columns).
      video_clicks: clicks of each training video (None without `clicked`).

    Returns:
      `{"users", "videos", "impressions", "clicks", "clicked_videos",
      "median_user_impressions", "median_user_clicks", "median_video_impressions",
      "cold_catalog_share", "click_rate", "features"}` (`clicks`,
      `clicked_videos`, `median_user_clicks` and `click_rate` None without
      clicks). `fit_model` refuses data whose shape nothing can be learned
      from (`tfrec_video.training.fit.check_learnable`).

    Example:

    >>> shape = data_shape(np.array([10, 20, 30]), np.array([1, 2, 9]), np.array([30, 30]), 4, ["title"])
    >>> shape["median_user_clicks"], shape["cold_catalog_share"], shape["click_rate"]
    (2.0, 0.5, 0.2)
    """
    user_impressions = np.asarray(user_impressions, np.float64)
    video_impressions = np.asarray(video_impressions, np.float64)
    clicks = None if user_clicks is None else np.asarray(user_clicks, np.float64)
    return {
        "users": int(len(user_impressions)),
        "videos": int(len(video_impressions)),
        "impressions": int(user_impressions.sum()),
        "clicks": None if clicks is None else int(clicks.sum()),
        "clicked_videos": None if video_clicks is None else int(np.count_nonzero(video_clicks)),
        "median_user_impressions": float(np.median(user_impressions)) if len(user_impressions) else 0.0,
        "median_user_clicks": None if clicks is None or not len(clicks) else float(np.median(clicks)),
        "median_video_impressions": float(np.median(video_impressions)) if len(video_impressions) else 0.0,
        "cold_catalog_share": float(max(0, catalog_size - len(video_impressions)) / catalog_size) if catalog_size else 0.0,
        "click_rate": None if clicks is None or not user_impressions.sum() else
        round(float(clicks.sum() / user_impressions.sum()), 6),
        "features": sorted(set(features)),
    }


def _ranked(counter: collections.Counter, max_size: Optional[int]) -> List[str]:
    # Most frequent first, ties broken by id, so the vocabulary is deterministic.
    items = sorted(((k, c) for k, c in counter.items() if k != ""), key=lambda kc: (-kc[1], kc[0]))
    if max_size is not None:
        items = items[:max_size]
    return [k for k, _ in items]


def _check_labels(clicked: np.ndarray, offset: int) -> None:
    """Raises at the first `clicked` value that is not 0 or 1 (a label of 2 or -1 trains a negative loss)."""
    bad = np.flatnonzero((clicked != 0) & (clicked != 1))
    if bad.size:
        raise DataValidationError(f"value {shorten(clicked[bad[0]].item())} is out of range", row=offset + int(bad[0]),
                                  feature="clicked", expected="a value 0 or 1 — 1 if clicked, else 0")


def _iter_batches(impressions) -> Iterable[Dict[str, np.ndarray]]:
    if isinstance(impressions, Mapping):
        yield {k: np.asarray(v) for k, v in impressions.items()}
        return
    for batch in impressions.batch(8192).as_numpy_iterator():
        yield batch


def adapt(
    catalog: Mapping[str, np.ndarray],
    impressions: Union[Mapping[str, np.ndarray], "object"],
    *,
    title_vocabulary_size: int = 8000,
    max_users: Optional[int] = None,
    max_videos: Optional[int] = None,
    media_components: int = 16,
    check_catalog: bool = False,
    progress: bool = False,
    title_tokens: Optional[List[str]] = None,
    pca: Optional[Mapping[str, Optional[dict]]] = None,
) -> Vocabularies:
    """Learns `Vocabularies` from the catalog and the training impressions.

    Args:
      catalog: the catalog as column arrays (`tfrec_video.data.read_table_numpy`).
      impressions: the training impressions, as column arrays or an unbatched
        `tf.data.Dataset` of feature dicts (streamed in batches, bounded memory).
      title_vocabulary_size: WordPiece vocabulary size.
      max_users: cap on user ids with their own row (the rest share hashed OOV buckets).
      max_videos: cap on video ids with their own row.
      media_components: principal components kept of `image_embedding`,
        `audio_embedding` and `title_embedding` (0 keeps the raw embeddings;
        see `features.pca`).
      check_catalog: raise `UnknownVideoError` when an impression's `video_id`
        is not in the catalog (its history may name any video). `fit_model`
        then finds the file and row with `check_ids_in_catalog`.
      progress: show a progress bar (tqdm, on stderr) of the rows read: on a
        large table this pass takes a while.
      title_tokens: a WordPiece vocabulary to keep instead of learning one (a
        warm start keeps its parent's, `tfrec_video.training.warm_start`).
      pca: `{"image_embedding": stats, "audio_embedding": ..., "title_embedding": ...}`
        to keep instead of fitting them; a name it lacks is fitted.

    Returns:
      A `Vocabularies`.

    Raises:
      DataValidationError: a `clicked` value other than 0 or 1 (named by its
        row in `impressions`), or no impressions at all.
      UnknownVideoError: with `check_catalog`, impressions of videos the
        catalog lacks.
    """
    from tqdm.auto import tqdm

    users: collections.Counter = collections.Counter()
    videos: collections.Counter = collections.Counter()
    user_clicks: collections.Counter = collections.Counter()
    video_clicks: collections.Counter = collections.Counter()
    devices: collections.Counter = collections.Counter()
    has_clicks = True
    history_length = None
    has_hour = False
    has_device = False
    rows = 0
    bar = tqdm(desc="adapt: reading the training impressions", unit=" rows", unit_scale=True, disable=not progress,
               leave=False)
    for batch in _iter_batches(impressions):
        has_clicks = has_clicks and "clicked" in batch
        if has_clicks:
            _check_labels(np.asarray(batch["clicked"]).reshape(-1), rows)
        rows += len(batch["video_id"])
        bar.update(len(batch["video_id"]))
        for name, counter, clicked in (("user_id", users, user_clicks), ("video_id", videos, video_clicks)):
            ids, inverse, counts = np.unique(as_strings(batch[name]), return_inverse=True, return_counts=True)
            counter.update(dict(zip(ids.tolist(), counts.tolist())))
            if has_clicks:
                per_id = np.bincount(inverse.reshape(-1), weights=np.asarray(batch["clicked"]).reshape(-1),
                                     minlength=len(ids))
                clicked.update(dict(zip(ids.tolist(), per_id.astype(np.int64).tolist())))
        if "device" in batch:
            has_device = True
            ids, counts = np.unique(as_strings(batch["device"]), return_counts=True)
            devices.update(dict(zip(ids.tolist(), counts.tolist())))
        if "history" in batch:
            history_length = int(np.asarray(batch["history"]).shape[-1])
        has_hour = has_hour or "hour" in batch
    bar.close()
    if not videos:
        raise DataValidationError("the training impressions are empty", expected="at least one impression")
    if check_catalog:
        known = set(as_strings(catalog["video_id"]).tolist())
        unknown = sorted(v for v in videos if v not in known)
        if unknown:
            raise UnknownVideoError(
                f"{len(unknown)} video ids of the training impressions are not in the catalog, e.g. "
                f"{shorten(unknown[:5])}", feature="video_id", expected="a video_id listed in the catalog")

    video_ids = _ranked(videos, max_videos)
    duration_mean = duration_std = None
    if "duration_s" in catalog:
        logd = np.log1p(np.maximum(np.asarray(catalog["duration_s"], np.float64), 0.0))
        duration_mean, duration_std = float(logd.mean()), float(max(logd.std(), 1e-6))
    categories = None
    if "category" in catalog:
        categories = _ranked(collections.Counter(as_strings(catalog["category"]).tolist()), None)

    def dim(name):
        return int(np.asarray(catalog[name]).shape[-1]) if name in catalog else None

    user_ids = _ranked(users, max_users)

    def fitted(name):
        if name not in catalog:
            return None
        return pca[name] if pca is not None and name in pca else fit_pca(catalog[name], media_components)

    optional = [name for name in ("category", "duration_s", "image_embedding", "audio_embedding", "title_embedding",
                                  "thumbnail", "audio") if name in catalog]
    optional += [name for name, present in (("history", history_length is not None), ("hour", has_hour),
                                            ("device", has_device)) if present]
    all_users = [u for u in users if u != ""]
    shape = data_shape(np.array([users[u] for u in all_users]),
                       np.array([user_clicks[u] for u in all_users]) if has_clicks else None,
                       np.array([c for v, c in videos.items() if v != ""]),
                       int(len(catalog["video_id"])), optional,
                       np.array([video_clicks[v] for v in videos if v != ""]) if has_clicks else None)
    shape["impressions"] = rows  # Every row, also one whose user_id is empty (left out of the users).
    counts = {}
    if has_clicks:
        # The priors come from every id, not only the capped vocabularies: they describe the data.
        all_users, all_videos = list(users), list(videos)
        rate, user_strength = click_rate_prior(np.array([users[u] for u in all_users]),
                                               np.array([user_clicks[u] for u in all_users]))
        _, video_strength = click_rate_prior(np.array([videos[v] for v in all_videos]),
                                             np.array([video_clicks[v] for v in all_videos]))
        counts = dict(user_impressions=[int(users[u]) for u in user_ids],
                      user_clicks=[int(user_clicks[u]) for u in user_ids],
                      video_clicks=[int(video_clicks[v]) for v in video_ids], click_rate=rate,
                      user_prior_strength=user_strength, video_prior_strength=video_strength)
    return Vocabularies(
        user_ids=user_ids,
        video_ids=video_ids,
        video_counts=[int(videos[v]) for v in video_ids],
        title_tokens=(list(title_tokens) if title_tokens is not None else
                      learn_title_vocabulary(as_strings(catalog["title"]), title_vocabulary_size)),
        categories=categories,
        devices=_ranked(devices, None) if has_device else None,
        duration_log_mean=duration_mean,
        duration_log_std=duration_std,
        image_dim=dim("image_embedding"),
        audio_dim=dim("audio_embedding"),
        history_length=history_length,
        has_hour=has_hour,
        image_pca=fitted("image_embedding"),
        audio_pca=fitted("audio_embedding"),
        catalog_size=int(len(catalog["video_id"])),
        data_shape=shape,
        title_embedding_dim=dim("title_embedding"),
        title_pca=fitted("title_embedding"),
        **counts,
    )
