"""Warm start: today's model from yesterday's, trained on today's window only.

    parent model dir ──load_model──► parent
    new window ──adapt (parent's WordPiece and PCA kept)──► window vocabularies
    merge_vocabularies(parent's, window's) ──► vocabularies (old ids keep their rows, new ids appended)
    VideoRecModel(config, vocabularies, catalog) ◄── copy_weights(parent): every weight, id tables row by row

`fit_model(..., warm_start_from="runs/yesterday/model")` and
`tfrec-video train --warm-start-from DIR` do all of it and then train as usual.

**What carries over, and what a new row starts from**

* Every weight of the parent is copied: towers, title CNN, ranking head,
  attention, calibration, list blend. The optimizer starts afresh, with the
  ranking head at `ranking_learning_rate` times the learning rate
  (`ScaledAdam`: at the full rate, one day's clicks make it forget). (Carrying
  the parent's Adam moments over from its checkpoint was tried and changed
  nothing measurable on the built-in daily service: within the seed-to-seed
  spread of a full retrain.)
* Id tables (users, videos, categories, devices) are copied row by row, by id:
  an id the parent knew gets its row back bit for bit, whatever its new
  position (`merge_vocabularies` appends new ids and compacts over evicted
  ones). The mask and OOV rows are copied as they are.
* A new user starts from the parent's hashed OOV row that the id fell into,
  the row the parent served that user with.
* A new video starts, by default (`new_video_rows="content"`), from the
  content-tower estimate: a ridge regression from the parent's content
  features of a video (title, category, duration, media: the candidate
  tower's input without the id) to its id row, fitted on the parent's videos
  that are in the catalog, then applied to the new ones. `"oov"` uses the
  hashed OOV row, as for users. With fewer known videos than twice the
  content width the fit is not trusted and the OOV row is used.
* The title WordPiece vocabulary and the media PCA statistics are kept by
  default (`"keep"`), so the title CNN and the media projections read the
  inputs they were trained on. `"refresh"` learns new ones on the new
  catalog: token rows are copied by token, new tokens start from the parent's
  `[UNK]` row; the media projections are mapped to the new principal
  components (`K' = diag(s') W'^T W diag(1/s) K`, and the bias takes the mean
  shift), which keeps their output wherever the new components span the old.
* The logQ and click-count statistics accumulate by default
  (`counts="accumulate"`, see `merge_vocabularies`).

**Compatibility.** A `ModelConfig` field that shapes the weights (widths,
layers, encoders, OOV buckets...) must equal the parent's: `check_compatible`
names the first one that does not. Fields that only steer training
(`TRAINING_FIELDS`: learning rate, dropouts, loss weights, caps...) may change.

Example:

>>> model, history = fit_model(catalog, "data/day_06/", schema, ModelConfig(),
...                            warm_start_from="runs/day_05/model")             # doctest: +SKIP
>>> model.lineage["generation"], history.warm_start["videos"]                 # doctest: +SKIP
(5, {'kept': 1840, 'added': 212, 'evicted': 0})
"""

import dataclasses
import datetime
import os
import re
import uuid
from typing import Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from tfrec_video.errors import ConfigError, shorten
from tfrec_video.features.vocabulary import Vocabularies, adapt
from tfrec_video.features.vocabulary_merge import COUNT_RULES, EVICTION_RULES, merge_vocabularies
from tfrec_video.models.config import ModelConfig

# ModelConfig fields that steer training but shape no weight: they may differ from the parent's.
TRAINING_FIELDS = frozenset({
    "learning_rate", "seed", "video_id_dropout", "user_id_dropout", "tower_dropout", "ranking_dropout",
    "ranking_l2", "temperature", "logq_correction", "logq_weight", "remove_accidental_hits", "retrieval_weight",
    "ranking_weight", "max_users", "max_videos", "fine_tune_text", "fine_tune_media", "watch_loss_weight",
    "watch_score_weight"})
# Fields that size what a refresh learns again (`title_vocabulary="refresh"`: the WordPiece vocabulary, whose
# token rows are copied by token): kept, they would be silently ignored, so they must then equal the parent's.
_REFRESHED_FIELDS = {"title_vocabulary_size": "title_vocabulary"}
_KEEP_OR_REFRESH = ("keep", "refresh")
_NEW_VIDEO_ROWS = ("content", "oov")
_PCA_LAYERS = (("image_pca", "image_projection"), ("audio_pca", "audio_projection"),
               ("title_embedding_pca", "title_embedding_projection"))


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """How a warm start treats what the data decides (see module docstring).

    Args:
      title_vocabulary: `"keep"` the parent's WordPiece vocabulary, or `"refresh"` it on the new catalog.
      pca: `"keep"` the parent's media PCA statistics, or `"refresh"` them on the new catalog.
      counts: `"accumulate"` the parent's impression and click counts with the window's, or
        `"refresh"` them (the window's alone).
      eviction: past `max_users` / `max_videos`, evict by `"recency"` or by `"frequency"`.
      new_video_rows: a new video's id row starts from the `"content"` estimate or its `"oov"` bucket.
      ranking_learning_rate: the ranking head's learning rate (the head and the target attention) as a
        fraction of `ModelConfig.learning_rate`, in (0, 1]; the towers train at the full rate
        (`tfrec_video.training.scaled_adam` says why and what was measured).
    """

    title_vocabulary: str = "keep"
    pca: str = "keep"
    counts: str = "accumulate"
    eviction: str = "recency"
    new_video_rows: str = "content"
    ranking_learning_rate: float = 0.5

    def __post_init__(self):
        rate = self.ranking_learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
            raise ConfigError(f"WarmStartConfig.ranking_learning_rate must be a fraction in (0, 1], got "
                              f"{shorten(rate)}.")
        for name, allowed in (("title_vocabulary", _KEEP_OR_REFRESH), ("pca", _KEEP_OR_REFRESH),
                              ("counts", COUNT_RULES), ("eviction", EVICTION_RULES),
                              ("new_video_rows", _NEW_VIDEO_ROWS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"WarmStartConfig.{name} must be one of {list(allowed)}, got "
                                  f"{shorten(getattr(self, name))}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_compatible(parent: ModelConfig, config: ModelConfig, parent_dir: str = "the parent model",
                     warm: Optional[WarmStartConfig] = None) -> None:
    """Raises `ConfigError` naming the first weight-shaping field where `config` differs from `parent`
    (`title_vocabulary_size` may differ when `warm` refreshes the title vocabulary)."""
    warm = warm or WarmStartConfig()
    for field in dataclasses.fields(ModelConfig):
        if field.name in TRAINING_FIELDS or (field.name in _REFRESHED_FIELDS
                                             and getattr(warm, _REFRESHED_FIELDS[field.name]) == "refresh"):
            continue
        before, now = getattr(parent, field.name), getattr(config, field.name)
        if before != now:
            raise ConfigError(
                f"warm start: ModelConfig.{field.name} is {shorten(now)} but {parent_dir} was trained with "
                f"{shorten(before)}; it shapes the model's weights, so they cannot be copied. Set "
                f"model.{field.name} back to {shorten(before)}, or train from scratch (no --warm-start-from).")


def window_vocabularies(parent: Vocabularies, catalog: Mapping[str, np.ndarray], impressions, config: ModelConfig,
                        warm: WarmStartConfig, progress: bool = False) -> tuple:
    """`(vocabularies, summary)`: `adapt` on the new window, merged into the parent's.

    The window is adapted uncapped (the caps apply to the merged vocabularies), with the parent's
    WordPiece vocabulary and PCA statistics passed in when they are kept, so they are not learned again.
    """
    kept_pca = None
    if warm.pca == "keep":
        kept_pca = {"image_embedding": parent.image_pca, "audio_embedding": parent.audio_pca,
                    "title_embedding": parent.title_pca}
    window = adapt(catalog, impressions, title_vocabulary_size=config.title_vocabulary_size,
                   media_components=config.media_components, check_catalog=True, progress=progress,
                   title_tokens=parent.title_tokens if warm.title_vocabulary == "keep" else None, pca=kept_pca)
    return merge_vocabularies(parent, window, max_users=config.max_users, max_videos=config.max_videos,
                              eviction=warm.eviction, counts=warm.counts)


def _base_name(variable) -> str:
    # Keras numbers layer names per process ("embedding_3"): the same layer of two models may differ only there.
    return re.sub(r"_\d+(?=/|:|$)", "", variable.name)


def _remap_ids(parent_layer, child_layer) -> None:
    """The child's id rows from the parent's, by id: known ids their own row, new ids their OOV bucket's."""
    before = parent_layer._embedding.embeddings.numpy()
    rows = child_layer._embedding.embeddings.numpy()
    special = 1 + child_layer.num_oov_buckets
    rows[:special] = before[:special]
    if child_layer.vocabulary:
        ids = tf.constant(np.asarray(child_layer.vocabulary, object))
        rows[child_layer.lookup(ids).numpy()] = before[parent_layer.lookup(ids).numpy()]
    child_layer._embedding.embeddings.assign(rows)


def _remap_tokens(parent_encoder, child_encoder) -> None:
    """Token rows by token; a token the parent lacked starts from the parent's `[UNK]` row (id 1)."""
    index = {token: i for i, token in enumerate(parent_encoder.vocabulary)}
    before = parent_encoder.token_embedding.embeddings.numpy()
    child_encoder.token_embedding.embeddings.assign(before[[index.get(t, 1) for t in child_encoder.vocabulary]])


def _remap_projection(parent_pca, child_pca, projection) -> None:
    """Maps a media projection trained on the parent's principal components onto the child's."""
    kernel, bias = (w.numpy().astype(np.float64) for w in projection.weights)
    old_w, old_s = parent_pca.components.astype(np.float64), np.maximum(parent_pca.scale, 1e-12)
    new_w, new_s = child_pca.components.astype(np.float64), np.maximum(child_pca.scale, 1e-12)
    mapped = (new_s[:, None] * (new_w.T @ old_w) / old_s[None, :]) @ kernel
    shift = ((child_pca.mean - parent_pca.mean).astype(np.float64) @ old_w / old_s) @ kernel
    projection.kernel.assign(mapped.astype(np.float32))
    projection.bias.assign((bias + shift).astype(np.float32))


def content_estimate(parent, catalog: Mapping[str, np.ndarray], new_ids: List[str],
                     max_known: int = 20_000, batch_size: int = 2048) -> Optional[np.ndarray]:
    """`[len(new_ids), id_dim]` id rows predicted from content by the parent (see module docstring).

    Args:
      parent: the parent `VideoRecModel`.
      catalog: the new catalog (column arrays); every one of `new_ids` must be in it.
      new_ids: the videos to estimate.
      max_known: the parent's videos the regression is fitted on, the most impressions first.
      batch_size: videos encoded at a time.

    Returns:
      The rows, or None when too few known videos are in the catalog to fit the regression.
    """
    tower = parent.candidate_tower
    row_of = {v: i for i, v in enumerate(np.asarray(catalog["video_id"]).astype(str).tolist())}
    ids, counts = parent.vocabularies.video_ids, parent.vocabularies.video_counts
    order = np.argsort(-np.asarray(counts), kind="stable") if counts is not None else range(len(ids))
    known = [ids[i] for i in order if ids[i] in row_of][:max_known]
    id_dim = parent.video_embedding.embedding_dim
    if not new_ids:
        return np.zeros([0, id_dim], np.float32)

    def features(ids):
        rows = np.array([row_of[v] for v in ids], np.int64)
        part = tower.prepare_catalog({name: np.asarray(catalog[name])[rows] for name in tower.input_names
                                      if name in catalog} | {"video_id": np.asarray(ids, object)})
        out = []
        for start in range(0, len(ids), batch_size):
            batch = {k: tf.constant(v[start:start + batch_size]) for k, v in part.items()}
            out.append(tower.encode(batch, training=False).numpy()[:, id_dim:])
        return np.concatenate(out).astype(np.float64)

    x = features(known) if known else np.zeros([0, 0])
    if len(known) < 2 * max(x.shape[1], 1):
        return None
    y = parent.video_embedding(tf.constant(np.asarray(known, object)), training=False).numpy().astype(np.float64)
    mean_x, std_x = x.mean(0), np.maximum(x.std(0), 1e-6)
    mean_y = y.mean(0)
    z = (x - mean_x) / std_x
    # Shrinkage of one unit per standardised feature: a rule of the data's width, not a fitted constant.
    coef = np.linalg.solve(z.T @ z + z.shape[1] * np.eye(z.shape[1]), z.T @ (y - mean_y))
    return (((features(new_ids) - mean_x) / std_x) @ coef + mean_y).astype(np.float32)


def copy_weights(parent, child, catalog: Mapping[str, np.ndarray], warm: WarmStartConfig) -> Dict[str, int]:
    """Copies `parent`'s weights into the built `child` (see module docstring).

    Both models must have created their variables (a call on a batch). The catalog table and the
    click-count tables are the child's own (they hold its catalog and counts).

    Returns:
      `{"copied": weights copied whole, "remapped": id and token tables copied row by row,
      "new_videos_from_content": new video rows from the content estimate}`.

    Raises:
      ConfigError: the two models' weights do not pair up (a layer differs).
    """
    own = set()
    for layer in (child.catalog_table, child.user_click_counts, child.video_click_counts):
        if layer is not None:
            own.update(id(v) for v in layer.weights)
    remapped = [(parent.video_embedding, child.video_embedding),
                (parent.query_tower.user_embedding, child.query_tower.user_embedding),
                (parent.query_tower.device_embedding, child.query_tower.device_embedding),
                (parent.candidate_tower.category_embedding, child.candidate_tower.category_embedding)]
    remapped = [(p, c) for p, c in remapped if c is not None]
    tokens = (parent.candidate_tower.title_encoder, child.candidate_tower.title_encoder)
    row_tables = {id(c._embedding.embeddings) for _, c in remapped}
    if tokens[1] is not None:
        row_tables.add(id(tokens[1].token_embedding.embeddings))
    before, after = parent.weights, child.weights
    if len(before) != len(after):
        raise ConfigError(f"warm start: the parent model has {len(before)} weights and the new one {len(after)}: "
                          "their layers differ, so the weights cannot be copied; train from scratch.")
    copied = 0
    for old, new in zip(before, after):
        if _base_name(old) != _base_name(new):
            raise ConfigError(f"warm start: the parent's weight {old.name} pairs with {new.name}: their layers "
                              "differ, so the weights cannot be copied; train from scratch.")
        if id(new) in own or id(new) in row_tables:
            continue
        if old.shape != new.shape:
            raise ConfigError(f"warm start: weight {new.name} is {new.shape.as_list()} in the new model and "
                              f"{old.shape.as_list()} in the parent; train from scratch.")
        new.assign(old)
        copied += 1
    for p, c in remapped:
        _remap_ids(p, c)
    if tokens[1] is not None:
        _remap_tokens(*tokens)
    for pca, projection in _PCA_LAYERS:
        old_pca, new_pca = getattr(parent.candidate_tower, pca), getattr(child.candidate_tower, pca)
        if old_pca is not None and new_pca is not None and not (
                np.array_equal(old_pca.components, new_pca.components) and np.array_equal(old_pca.mean, new_pca.mean)):
            _remap_projection(old_pca, new_pca, getattr(child.candidate_tower, projection))
    from_content = 0
    if warm.new_video_rows == "content":
        known = set(parent.vocabularies.video_ids)
        new_ids = [v for v in child.vocabularies.video_ids if v not in known]
        rows = content_estimate(parent, catalog, new_ids) if new_ids else None
        if rows is not None and len(rows):
            table = child.video_embedding._embedding.embeddings
            index = child.video_embedding.lookup(tf.constant(np.asarray(new_ids, object))).numpy()
            table.scatter_nd_update(index[:, None], rows)
            from_content = len(rows)
    return {"copied": copied, "remapped": len(remapped) + (tokens[1] is not None),
            "new_videos_from_content": from_content}


def lineage(train_paths, vocabularies: Vocabularies, parent=None, parent_dir: Optional[str] = None,
            warm: Optional[WarmStartConfig] = None, summary: Optional[dict] = None) -> dict:
    """The `model.lineage` that `save_model` writes to `model.json`.

    Returns:
      `{"model_id", "generation", "parent", "windows", "warm_start"}`: a fresh id; 0 for a model
      trained from scratch, else the parent's generation + 1; the parent's path and id (None from
      scratch); the data windows of every generation, oldest first (training files, impressions,
      users, videos, when it was trained, whether warm-started); the `WarmStartConfig` and what the
      merge kept, added and evicted (None from scratch).
    """
    paths = [train_paths] if isinstance(train_paths, (str, os.PathLike)) else list(train_paths)
    shape = vocabularies.data_shape or {}
    window = {"train": [os.fspath(p) for p in paths], "impressions": shape.get("impressions"),
              "users": shape.get("users"), "videos": shape.get("videos"), "warm_started": parent is not None,
              "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    before = (getattr(parent, "lineage", None) or {}) if parent is not None else {}
    return {"model_id": uuid.uuid4().hex,
            "generation": int(before.get("generation", 0)) + 1 if parent is not None else 0,
            "parent": None if parent is None else {"path": os.path.abspath(os.fspath(parent_dir)),
                                                   "model_id": before.get("model_id")},
            "windows": list(before.get("windows", [])) + [window],
            "warm_start": None if parent is None else dict(warm.to_dict(), **(summary or {}))}
