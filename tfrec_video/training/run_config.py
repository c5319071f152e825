"""`RunConfig`: everything `tfrec-video train` needs, read from a YAML or JSON file.

A run config mirrors the package's dataclasses section by section:

```yaml
output_dir: runs/first            # checkpoints, backups, TensorBoard logs, report.json, plots
strategy: default                 # default | mirrored | multi_worker
data:
  catalog: data/catalog/*.parquet # a file, directory, glob or list; local, s3://, gs://, ...
  train: data/train/*.tfrecord
  validation: data/valid/         # optional: per-epoch val_auc and val_recall_at_K
  test: data/test/                # optional: report.json metrics and plots
  embeddings: emb/                # optional: `tfrec-video embed` output joined into the catalog
  history_length: 20              # the files' history length, image, audio and title-embedding widths
  image_dim: 1024
  audio_dim: 128
  title_embedding_dim: 384
model:                            # ModelConfig fields
  embedding_dim: 64
  title_encoder: both             # cnn (default) | pretrained | both
  text_model: encoders/e5_small   # tfrec-video convert-text-encoder --out encoders/e5_small
training:                         # TrainingConfig fields
  epochs: 3
  batch_size: 1024
callbacks:                        # CallbackConfig fields
  early_stopping: val_auc
  patience: 2
export:                           # ExportConfig fields
  dir: saved_models
  name: video_rec
warm_start_from: runs/yesterday/model   # optional: start from that model (tfrec_video.training.warm_start)
warm_start:                       # WarmStartConfig fields: what a warm start keeps or refreshes
  title_vocabulary: keep          # keep | refresh
  pca: keep                       # keep | refresh
  counts: accumulate              # accumulate | refresh
  eviction: recency               # recency | frequency (past model.max_users / max_videos)
  new_video_rows: content         # content | oov: where a new video's id row starts
  ranking_learning_rate: 0.5      # the ranking head's rate, a fraction of model.learning_rate
```

`data: {builtin: tiny}` (or `default`, or `sparse`: `BuiltinConfig.sparse()`, or `daily`: `BuiltinConfig.daily()`)
trains on the built-in dataset instead of files; its paths and sizes come from the generated dataset.
`data: {builtin: daily, days: [0, 5]}` trains on those days of the daily service and tests on the next day:
a daily job's window (`DataConfig.days`).

**Reading is data only.** Files are parsed as plain YAML (JSON for `.json`) by
`tfrec_video.config_fields.read_config`: no tags, no Python objects, nothing is
executed, and a file over 1 MB, with more than 100 aliases, 10,000 values once
its aliases are expanded, or 32 levels of nesting is refused. Every key is checked
(`tfrec_video.config_fields.from_mapping`), so a misspelled setting is an error
that names the file, the line, the section and the closest field.

**Paths.** Relative local paths in a config file are relative to that file's
directory, not to the working directory, so a config works from anywhere
(`model.text_model` too).
They are resolved to absolute paths when the file is read, and the data paths
must exist (a glob must match a file). Paths with a scheme (`s3://bucket/x`)
are left as they are and checked when read.

**Overrides.** `--set section.field=value` (the value is parsed as YAML:
`--set model.embedding_dim=32`, `--set model.query_hidden_units=[64,32]`)
and the dedicated flags of `tfrec-video train` override the file.
A `tune:` section (`tfrec-video tune`, `tfrec_video.training.search_space`) is accepted and ignored.

Example:

>>> config = run_config_from_dict({"data": {"builtin": "tiny"}, "training": {"epochs": 1}})
>>> config.training.epochs, config.strategy
(1, 'default')
>>> apply_overrides(config, ["model.embedding_dim=16"]).model.embedding_dim
16
"""

import dataclasses
import glob
import json
import math
import os
from typing import Optional, Sequence, Union

import yaml

from tfrec_video.config_fields import (check_known, field_names, from_mapping, in_file, line_of, parse_config_text,
                                       plain_copy, read_config)
from tfrec_video.distribute import STRATEGIES
from tfrec_video.errors import ConfigError, shorten
from tfrec_video.models.config import ModelConfig
# DataConfig and BUILTIN_SIZES are re-exported: run configs are read and built through this module.
from tfrec_video.training.data_config import BUILTIN_SIZES, DataConfig, Paths, _positive_int  # noqa: F401
from tfrec_video.training.fit import TrainingConfig
from tfrec_video.training.warm_start import WarmStartConfig

# Validation metrics EarlyStopping and the best-checkpoint choice can follow (K of the recall is free).
MONITOR_HELP = "'val_auc', 'val_logloss', 'val_loss' or 'val_recall_at_K' (K a positive integer)"

@dataclasses.dataclass(frozen=True)
class CallbackConfig:
    """The Keras callbacks of a training run.

    Args:
      backup_every: how often `BackupAndRestore` saves the training state that
        an interrupted run resumes from: `"epoch"` or every N training steps.
      checkpoint: keep `ModelCheckpoint` weights (`checkpoints/`): every epoch,
        or only the best by `monitor` when there is validation data.
      monitor: the validation metric that picks the best checkpoint and that
        early stopping follows: `val_auc`, `val_logloss`, `val_loss` or
        `val_recall_at_K` (K a positive integer). Larger is better, except for losses.
      early_stopping: stop when `monitor` has not improved for `patience`
        epochs and restore the best weights. Ignored when `training.select_heads`
        is on (the default): `HeadSelection` then stops and restores each head
        on its own metric.
      patience: epochs without improvement before stopping.
      recall_k: the K of the per-epoch validation Recall@K (`val_recall_at_K`),
        0 to skip it (it scores the whole catalog once per epoch).
      tensorboard: write TensorBoard scalars (`tensorboard/`).
      projector: write the catalog's video embeddings with their ids, titles
        and categories for TensorBoard's embedding projector.
      projector_max_videos: videos written for the projector (catalog order).
    """

    backup_every: Union[str, int] = "epoch"
    checkpoint: bool = True
    monitor: str = "val_auc"
    early_stopping: bool = False
    patience: int = 2
    recall_k: int = 100
    tensorboard: bool = True
    projector: bool = True
    projector_max_videos: int = 10_000

    def __post_init__(self):
        if self.backup_every != "epoch":
            _positive_int("callbacks", "backup_every", self.backup_every)
        _positive_int("callbacks", "patience", self.patience)
        _positive_int("callbacks", "projector_max_videos", self.projector_max_videos)
        if not isinstance(self.recall_k, int) or isinstance(self.recall_k, bool) or self.recall_k < 0:
            raise ConfigError(f"callbacks.recall_k must be an integer >= 0, got {shorten(self.recall_k)}.")
        self.monitor_mode()

    def monitor_mode(self) -> str:
        """`"max"` or `"min"`: which way `monitor` improves."""
        m = self.monitor
        if m in ("val_auc",) or (isinstance(m, str) and m.startswith("val_recall_at_")
                                 and m[len("val_recall_at_"):].isdigit() and int(m[len("val_recall_at_"):]) > 0):
            return "max"
        if m in ("val_loss", "val_logloss"):
            return "min"
        raise ConfigError(f"callbacks.monitor must be {MONITOR_HELP}; got {shorten(m)}.")

    def monitored_recall_k(self) -> Optional[int]:
        """The K of a monitored `val_recall_at_K`, else None."""
        return int(self.monitor[len("val_recall_at_"):]) if self.monitor.startswith("val_recall_at_") else None


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The servable SavedModel written at the end of a run.

    Args:
      enabled: export `dir/name/<version>/` (the chief only, under a strategy).
      dir: the `saved_models` directory.
      name: the model name (the directory TF Serving serves).
      k: candidates retrieved before ranking.
      n: videos `serving_default` returns.
      keep_seen: let `retrieve` and `serving_default` return the videos in the
        request's `history` (by default they are left out; `export_saved_model`).
      score_weights: a watch model's `[click_weight, watch_weight]` of the served
        `score`, fixed in the export (null: `[1, model.watch_score_weight]`).
    """

    enabled: bool = True
    dir: str = "saved_models"
    name: str = "video_rec"
    k: int = 100
    n: int = 10
    keep_seen: bool = False
    score_weights: Optional[Sequence[float]] = None

    def __post_init__(self):
        _positive_int("export", "k", self.k)
        if self.score_weights is not None:
            weights = self.score_weights
            if (not isinstance(weights, (list, tuple)) or len(weights) != 2 or any(
                    isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) for w in weights)):
                raise ConfigError(f"export.score_weights must be two numbers [click, watch], got {shorten(weights)}.")
            # A list, as YAML and JSON write it back (`to_dict`, the run's settings record).
            object.__setattr__(self, "score_weights", [float(w) for w in weights])
        _positive_int("export", "n", self.n)
        if self.n > self.k:
            raise ConfigError(f"export.n ({self.n}) must be <= export.k ({self.k}).")
        for name in ("dir", "name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(f"export.{name} must be a non-empty string, got {shorten(getattr(self, name))}.")
        if not isinstance(self.keep_seen, bool):
            raise ConfigError(f"export.keep_seen must be true or false, got {shorten(self.keep_seen)}.")
        if os.sep in self.name or self.name in (".", ".."):
            raise ConfigError(f"export.name must be a plain directory name, got {shorten(self.name)}.")


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "callbacks": CallbackConfig,
             "export": ExportConfig, "warm_start": WarmStartConfig}
_TOP_LEVEL = ("output_dir", "strategy", "warm_start_from")
# Sections that other commands read from the same file (`tfrec-video tune`'s `tune:`): a run
# accepts and ignores them, so one file serves `tune` and then `train`.
OTHER_SECTIONS = ("tune",)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole training run (see the module docstring for the file format).

    Args:
      data: a `DataConfig`.
      model: a `ModelConfig`.
      training: a `TrainingConfig`.
      callbacks: a `CallbackConfig`.
      export: an `ExportConfig`.
      output_dir: where the run writes checkpoints, backups, logs, the saved
        model, `report.json` and the plots.
      strategy: `"default"`, `"mirrored"` (all local GPUs, or CPU devices) or
        `"multi_worker"` (`TF_CONFIG`).
      warm_start: a `WarmStartConfig`, read when `warm_start_from` is set.
      warm_start_from: a model directory (a run's `output_dir/model`) to warm-start
        from, or None to train from scratch.
    """

    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    callbacks: CallbackConfig = CallbackConfig()
    export: ExportConfig = ExportConfig()
    output_dir: str = "runs/video_rec"
    strategy: str = "default"
    warm_start: WarmStartConfig = WarmStartConfig()
    warm_start_from: Optional[str] = None

    def __post_init__(self):
        if self.warm_start_from is not None and (not isinstance(self.warm_start_from, str)
                                                 or not self.warm_start_from.strip()):
            raise ConfigError(f"warm_start_from must be a model directory, got {shorten(self.warm_start_from)}.")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {shorten(self.strategy)}.")
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise ConfigError(f"output_dir must be a non-empty path, got {shorten(self.output_dir)}.")
        if self.callbacks.early_stopping and self.data.validation is None:
            raise ConfigError(f"callbacks.early_stopping follows {self.callbacks.monitor!r}, a validation metric: "
                              "set data.validation.")

    def to_dict(self) -> dict:
        out = {"output_dir": self.output_dir, "strategy": self.strategy, "warm_start_from": self.warm_start_from}
        for name in _SECTIONS:
            section = getattr(self, name)
            out[name] = section.to_dict() if hasattr(section, "to_dict") else dataclasses.asdict(section)
        # Tuples become lists so that the dict is plain YAML/JSON.
        return json.loads(json.dumps(out))


def run_config_from_dict(values, where: str = "config") -> RunConfig:
    """A `RunConfig` from a plain dict (the parsed file); paths are taken as they are."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with the sections {sorted(_SECTIONS)}, "
                          f"got {type(values).__name__}.")
    check_known(values, list(_SECTIONS) + list(_TOP_LEVEL) + list(OTHER_SECTIONS), where)
    if "data" not in values:
        raise ConfigError(f"{where}: the `data` section is missing (catalog and train paths, or builtin: tiny).")
    sections = {name: from_mapping(cls, values.get(name) or {}, f"{where}: {name}")
                for name, cls in _SECTIONS.items()}
    return RunConfig(**sections, **{k: values[k] for k in _TOP_LEVEL if k in values})


def _resolve(path: str, base: str) -> str:
    if "://" in path:
        return path
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def _check_exists(field: str, paths: Paths) -> None:
    for path in ([paths] if isinstance(paths, str) else paths):
        if "://" in path:
            continue  # remote: checked when read
        if glob.has_magic(path):
            if not glob.glob(path):
                raise ConfigError(f"data.{field}: the glob {shorten(path)} matches no file.")
        elif not os.path.exists(path):
            raise ConfigError(f"data.{field}: {shorten(path)} does not exist.")


def resolve_paths(config: RunConfig, base_dir: str, check: bool = True) -> RunConfig:
    """Makes the config's local paths absolute, relative to `base_dir`, and checks the data paths exist.

    Args:
      config: a `RunConfig`.
      base_dir: the directory relative paths are relative to (the config file's).
      check: raise `ConfigError` for a data path that does not exist or a glob that matches nothing.

    Returns:
      The config with absolute local paths.
    """
    data = {}
    for name in ("catalog", "train", "validation", "test", "embeddings"):
        value = getattr(config.data, name)
        if value is not None:
            value = _resolve(value, base_dir) if isinstance(value, str) else tuple(_resolve(v, base_dir) for v in value)
            if check:
                _check_exists(name, value)
        data[name] = value
    if config.data.builtin_dir is not None:
        data["builtin_dir"] = _resolve(config.data.builtin_dir, base_dir)
    # The encoders' handles too: a local SavedModel or .tflite path, like a data path; URLs stay.
    model = dataclasses.replace(config.model, **{name: _resolve(getattr(config.model, name), base_dir)
                                                 for name in ("text_model", "image_model", "audio_model")
                                                 if getattr(config.model, name) is not None})
    warm_start_from = config.warm_start_from
    if warm_start_from is not None:
        warm_start_from = _resolve(warm_start_from, base_dir)
        if check and "://" not in warm_start_from and not os.path.isdir(warm_start_from):
            raise ConfigError(f"warm_start_from: {shorten(warm_start_from)} is not a directory (expected a saved "
                              "model, e.g. an earlier run's output_dir/model).")
    return dataclasses.replace(
        config, warm_start_from=warm_start_from,
        data=dataclasses.replace(config.data, **data), output_dir=_resolve(config.output_dir, base_dir),
        model=model, export=dataclasses.replace(config.export, dir=_resolve(config.export.dir, base_dir)))


def read_config_file(path: str) -> dict:
    """The top-level mapping of a YAML/JSON config file, unchecked (`{}` for an empty file).

    Raises:
      ConfigError: the file is missing, too large, not valid YAML/JSON, refused by the bounds of
        `tfrec_video.config_fields.read_config`, or not a mapping.
    """
    return _read_mapping(path)[0]


def _read_mapping(path: str):
    values, lines = read_config(path)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(values).__name__}.")
    return values, lines


def load_run_config(path: Optional[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Reads a run config file, applies `section.field=value` overrides, and resolves its paths.

    Args:
      path: a `.yaml`/`.yml`/`.json` file, or None for overrides only (paths
        then relative to the working directory).
      overrides: `section.field=value` strings, values parsed as YAML.

    Returns:
      The `RunConfig`, with absolute local paths.

    Raises:
      ConfigError: the file is missing or not valid YAML/JSON, a key is
        unknown, a value is out of range, or a data path does not exist.
    """
    values, lines = {}, {}
    base = os.getcwd()
    where = "config"
    if path is not None:
        values, lines = _read_mapping(path)
        base = os.path.dirname(os.path.abspath(path))
        where = path
    try:
        return resolve_paths(run_config_from_dict(_with_overrides(values, overrides), where), base)
    except ConfigError as error:  # the dataclasses name the field; the user also needs the file and line
        overridden = dict.fromkeys((text.partition("=")[0].strip() for text in overrides), 0)
        if str(error).startswith("--set") or line_of(str(error), overridden) is not None:
            raise  # about a --set value: the file is not where to look
        raise in_file(error, path, lines) from None


def _split_override(text: str):
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.field=value, got {shorten(text)}.")
    # The same bounded YAML as a file: a value on the command line may come from a script or a template.
    value = parse_config_text(raw, f"--set {shorten(text)}")[0] if raw.strip() else None
    return key.strip().split("."), value


def _with_overrides(values: dict, overrides: Sequence[str]) -> dict:
    values = plain_copy(values)
    for text in overrides:
        keys, value = _split_override(text)
        if len(keys) == 1 and keys[0] in _TOP_LEVEL:
            values[keys[0]] = value
            continue
        if len(keys) != 2 or keys[0] not in _SECTIONS:
            raise ConfigError(f"--set {shorten(text)}: the key must be {', '.join(_TOP_LEVEL)} or section.field with "
                              f"a section of {sorted(_SECTIONS)}.")
        section = values.setdefault(keys[0], {}) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"--set {shorten(text)}: the config's {keys[0]!r} section is not a mapping.")
        check_known([keys[1]], field_names(_SECTIONS[keys[0]]), f"--set {keys[0]}")
        section[keys[1]] = value
        values[keys[0]] = section
    return values


def apply_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """`config` with `section.field=value` overrides applied (paths as given)."""
    return run_config_from_dict(_with_overrides(config.to_dict(), overrides))


def dump_run_config(config: RunConfig, path: str) -> str:
    """Writes `config` as YAML to `path`, atomically; `load_run_config(path)` reads it back."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    return path
