"""`DataConfig`: the `data:` section of a run config: the built-in dataset or the user's files.

Split from `run_config` so that each module stays readable; `run_config` re-exports it.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

from tfrec_video.errors import ConfigError, shorten

BUILTIN_SIZES = ("tiny", "default", "sparse", "daily")

Paths = Union[None, str, Tuple[str, ...]]


def _as_paths(value, field: str) -> Paths:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    raise ConfigError(f"data.{field} must be a path, a glob or a list of them, got {shorten(value)}.")


def _positive_int(section: str, name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{section}.{name} must be a positive integer, got {shorten(value)}.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the catalog and impressions are.

    Args:
      builtin: `"tiny"`, `"default"`, `"sparse"` or `"daily"` to train on the built-in dataset
        (the paths and sizes below then come from it), or None for files.
      builtin_dir: the built-in dataset's cache directory (default
        `$TFREC_VIDEO_CACHE` or `~/.cache/tfrec_video/builtin`).
      builtin_options: `BuiltinConfig` fields of the built-in dataset to change,
        for example `{language_shift: 0.9}` (only with `builtin`); the dataset
        is then cached under its own config hash.
      days: with a daily built-in dataset (`daily`, or `builtin_options: {days: N}`), the
        days of its window to train on, `d` or `[first, last]` (days from 0, both
        included; `tfrec_video.datasets.builtin.day_files`) instead of its train split:
        the daily job's window. The test split is then the next day's impressions (none
        after the window's last day), and validation only `validation` when given.
      catalog: catalog files (TFRecord, Parquet or CSV; file, directory, glob or list).
      train: training impressions.
      validation: impressions evaluated after each epoch (val_auc, val_recall_at_K).
      test: impressions for the final report and plots.
      embeddings: `tfrec-video embed` output whose image, audio and title
        embeddings are joined into the catalog by `video_id`.
      history_length: length of the impressions' `history` lists.
      image_dim: width of `image_embedding` in the files.
      audio_dim: width of `audio_embedding` in the files.
      title_embedding_dim: width of `title_embedding` in the catalog files (an
        embed step's output records its own).
    """

    builtin: Optional[str] = None
    builtin_dir: Optional[str] = None
    builtin_options: Optional[Dict[str, Any]] = None
    days: Optional[Tuple[int, int]] = None
    catalog: Paths = None
    train: Paths = None
    validation: Paths = None
    test: Paths = None
    embeddings: Paths = None
    history_length: int = 20
    image_dim: int = 1024
    audio_dim: int = 128
    title_embedding_dim: int = 384

    def __post_init__(self):
        for name in ("catalog", "train", "validation", "test", "embeddings"):
            object.__setattr__(self, name, _as_paths(getattr(self, name), name))
        for name in ("history_length", "image_dim", "audio_dim", "title_embedding_dim"):
            _positive_int("data", name, getattr(self, name))
        if self.builtin_options is not None:
            self._check_builtin_options()
        if self.builtin is not None:
            if self.builtin not in BUILTIN_SIZES:
                raise ConfigError(f"data.builtin must be one of {BUILTIN_SIZES} (or absent), got "
                                  f"{shorten(self.builtin)}.")
            given = [n for n in ("catalog", "train", "test") if getattr(self, n) is not None]
            if given:
                raise ConfigError(f"data.builtin={shorten(self.builtin)} supplies the catalog, train and test files; "
                                  f"remove data.{', data.'.join(given)} or data.builtin.")
        elif self.catalog is None or self.train is None:
            raise ConfigError("data needs `catalog` and `train` paths (or `builtin: tiny|default|sparse|daily` for the "
                              "built-in dataset).")
        if self.days is not None:
            self._check_days()

    def builtin_config(self):
        """The `BuiltinConfig` of `builtin` with `builtin_options` applied (None without `builtin`)."""
        from tfrec_video.datasets import BuiltinConfig

        if self.builtin is None:
            return None
        try:
            return BuiltinConfig.named(self.builtin, **(self.builtin_options or {}))
        except ConfigError as error:
            raise ConfigError(f"data.builtin_options: {error}") from None

    def _check_days(self) -> None:
        days = self.days
        if isinstance(days, int) and not isinstance(days, bool):
            days = (days, days)
        if (not isinstance(days, (list, tuple)) or len(days) != 2
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in days) or days[0] > days[1]):
            raise ConfigError(f"data.days must be a day (an integer >= 0) or [first, last] with first <= last, got "
                              f"{shorten(self.days)}.")
        given, days = self.days, tuple(days)
        object.__setattr__(self, "days", days)
        dataset = self.builtin_config()
        if dataset is None or not dataset.days:
            raise ConfigError("data.days selects days of the built-in daily service: set data.builtin: daily (or "
                              "data.builtin_options: {days: N}).")
        if days[1] >= dataset.window_days:
            raise ConfigError(f"data.days: the built-in dataset's window has days 0 to {dataset.window_days - 1}, got "
                              f"{shorten(given)}.")

    def _check_builtin_options(self) -> None:
        if not isinstance(self.builtin_options, dict):
            raise ConfigError(f"data.builtin_options must be a mapping of BuiltinConfig fields (for example "
                              f"{{language_shift: 0.9}}), got {shorten(self.builtin_options)}.")
        if self.builtin is None:
            raise ConfigError("data.builtin_options changes the built-in dataset: set data.builtin too.")
        if self.builtin in BUILTIN_SIZES:
            self.builtin_config()  # every field checked now, not when the data is generated
