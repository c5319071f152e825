"""The public API of the built-in dataset: `generate`, `load_manifest`, `ensure_builtin`.

`generate` writes a dataset into a folder atomically; `ensure_builtin` caches
one per config hash under `default_cache_dir()`; `load_manifest` reads a
generated dataset's `dataset.json` (`MANIFEST`); `day_files` and
`benchmark_days` read a daily dataset's (`BuiltinConfig.days`) days.
"""

import json
import os
import shutil
import time
from typing import List, Optional

from tfrec_video.datasets.builtin import truth as truth_lib
from tfrec_video.datasets.builtin.config import DATASET_VERSION, FORMATS, BuiltinConfig
from tfrec_video.datasets.builtin.writer import _generate_into

MANIFEST = "dataset.json"


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}.")
    return format


def _remove_tree(path: str):
    shutil.rmtree(path, ignore_errors=True)


def generate(out_dir: str, config: Optional[BuiltinConfig] = None, format: str = "parquet",
             progress: bool = True, overwrite: bool = False) -> dict:
    """Generates the built-in dataset into `out_dir`.

    Everything is first written into a temporary sibling folder, with
    `dataset.json` written last, and the folder is then renamed to `out_dir`:
    an interrupted run never leaves something that looks complete.

    Args:
      out_dir: destination folder (local). It must not exist, or be empty,
        unless `overwrite`.
      config: a `BuiltinConfig`; default `BuiltinConfig()`.
      format: `"parquet"`, `"tfrecord"` or `"csv"` for the catalog and
        impression files.
      progress: show tqdm progress bars.
      overwrite: replace an existing non-empty `out_dir`.

    Returns:
      The manifest (the content of `dataset.json`; its file paths are
      relative to `out_dir`).

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ConfigError: a bad config.

    Example:

    >>> m = generate("/tmp/tiny", BuiltinConfig.tiny(), format="tfrecord", progress=False)  # doctest: +SKIP
    >>> m["ctr"]["train"]                                                                 # doctest: +SKIP
    0.12
    """
    cfg = BuiltinConfig() if config is None else config
    if not isinstance(cfg, BuiltinConfig):
        raise TypeError(f"config must be a BuiltinConfig, got {type(cfg).__name__}.")
    cfg.validate()
    fmt = _check_format(format)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)) and not overwrite:
        raise FileExistsError(f"{out_dir!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{time.time_ns()}")
    try:
        manifest = _generate_into(tmp, cfg, fmt, progress)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        _remove_tree(tmp)
        raise
    return manifest


def _move_into_place(tmp: str, out_dir: str, overwrite: bool):
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    elif os.path.lexists(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir!r} appeared while generating; pass overwrite=True to replace it.")
        trash = f"{tmp}.old"
        os.rename(out_dir, trash)
        os.rename(tmp, out_dir)
        _remove_tree(trash)
        return
    os.rename(tmp, out_dir)


def load_manifest(path: str) -> dict:
    """Reads a generated dataset's `dataset.json`.

    Args:
      path: the dataset folder, or its `dataset.json`.

    Returns:
      The manifest dict, with `root` (the absolute dataset folder) added and
      every path under `files` made absolute. A dataset with a validation
      split lists it under `files["validation"]`, `counts`
      (`validation_impressions`, `validation_clicks`), `ctr["validation"]` and
      `time["validation"]` (its first second); one without (a config with
      `validation_fraction=0`, or a dataset from before validation splits)
      has none of these keys. A daily dataset (`BuiltinConfig.days`) also
      has `days` (the benchmark days and each day's statistics) and
      `files["days"]`, a list of each day's files (see `day_files`).

    Raises:
      FileNotFoundError: no `dataset.json`: not a built-in dataset, or an
        incomplete (interrupted) generation.

    Example:

    >>> m = load_manifest(ensure_builtin())      # doctest: +SKIP
    >>> m["files"]["train"][:1]                  # doctest: +SKIP
    ['/root/.cache/tfrec_video/builtin/builtin-parquet-1a2b3c4d5e6f/train/part-00000.parquet']
    """
    path = os.path.abspath(os.fspath(path))
    root, file = (os.path.dirname(path), path) if path.endswith(".json") else (path, os.path.join(path, MANIFEST))
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"{root!r} has no {MANIFEST}: it is not a generated built-in dataset, or its generation was "
            "interrupted. Regenerate it with `tfrec-video generate-data --out DIR` or ensure_builtin()."
        )
    with open(file, "r", encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["root"] = root

    def absolute(value):   # paths, lists of paths and (days) lists of lists of paths
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return os.path.join(root, value) if isinstance(value, str) else value

    manifest["files"] = {key: absolute(value) for key, value in manifest.get("files", {}).items()}
    return manifest


def _daily_manifest(dataset_dir: str) -> dict:
    manifest = load_manifest(dataset_dir)
    if "days" not in manifest:
        raise ValueError(f"{manifest['root']!r} is not a daily dataset: generate it with BuiltinConfig(days=N) "
                         "(`tfrec-video generate-data --days N`, or --daily).")
    return manifest


def day_files(dataset_dir: str, first: int, last: Optional[int] = None) -> List[str]:
    """The impression files of days `first` to `last` (both included) of a daily dataset.

    Day `d` is the `d`-th day of the time window, from 0; each day's
    impressions are one table under `days/<ddd>/`, in the format of `train/`
    with one more column, `day`, so the list goes to every reader
    (`read_table`, `impressions_dataset`, `fit_model`) with the schema
    `impressions_schema(history_length, day=True)`.

    Args:
      dataset_dir: a dataset generated with `BuiltinConfig.days` > 0.
      first: the first day.
      last: the last day; default `first` (one day).

    Returns:
      Absolute file paths, in day order (empty when no impression fell on those days).

    Raises:
      ValueError: not a daily dataset, or days outside the window.

    Example: the daily-retraining loop: train on every day before `d` (or
    only on day `d - 1`, warm-starting yesterday's model), evaluate on day `d`.

    >>> schema = impressions_schema(20, day=True)                   # doctest: +SKIP
    >>> for d in benchmark_days(path):                              # doctest: +SKIP
    ...     train, test = day_files(path, 0, d - 1), day_files(path, d)
    """
    manifest = _daily_manifest(dataset_dir)
    per_day = manifest["files"]["days"]
    last = first if last is None else last
    if not 0 <= first <= last < len(per_day):
        raise ValueError(f"days must satisfy 0 <= first <= last < {len(per_day)} (the window's days), "
                         f"got first={first!r}, last={last!r}.")
    return [f for day in per_day[first:last + 1] for f in day]


def benchmark_days(dataset_dir: str) -> List[int]:
    """The benchmark days of a daily dataset: the last `BuiltinConfig.days` days of the window.

    Raises:
      ValueError: not a daily dataset.
    """
    return list(_daily_manifest(dataset_dir)["days"]["benchmark_days"])


def default_cache_dir() -> str:
    """`$TFREC_VIDEO_CACHE` if set, else `~/.cache/tfrec_video/builtin`."""
    env = os.environ.get("TFREC_VIDEO_CACHE")
    return os.path.abspath(os.path.expanduser(env)) if env else os.path.expanduser(
        os.path.join("~", ".cache", "tfrec_video", "builtin"))


def _is_complete(path: str, cfg: BuiltinConfig, fmt: str) -> bool:
    try:
        m = load_manifest(path)
    except (FileNotFoundError, ValueError, OSError):
        return False
    if m.get("version") != DATASET_VERSION or m.get("format") != fmt or m.get("config") != cfg.to_dict():
        return False
    files = m["files"]
    listed = (files["catalog"] + files["train"] + files.get("validation", []) + files["test"]
              + files.get("media", []) + [f for day in files.get("days", []) for f in day])
    return all(os.path.exists(f) for f in listed) and os.path.isdir(os.path.join(m["root"], truth_lib.TRUTH_DIR))


def _remove_stale_temps(cache_dir: str, name: str):
    """Removes temp folders of generations whose process is gone (killed runs)."""
    prefix = f".{name}.tmp-"
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        try:
            pid = int(entry[len(prefix):].split("-")[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            _remove_tree(os.path.join(cache_dir, entry))
        except (PermissionError, OSError):
            pass


def ensure_builtin(cache_dir: Optional[str] = None, config: Optional[BuiltinConfig] = None,
                   format: str = "parquet", progress: bool = True) -> str:
    """Returns the folder of the built-in dataset for `config`, generating it if needed.

    Datasets are cached under `cache_dir/builtin-<format>-<hash>`, where the
    hash covers the whole config and the generator version, so changing any
    field gives a new dataset. A folder without a complete `dataset.json`
    (an interrupted run) is regenerated.

    Args:
      cache_dir: cache root; default `default_cache_dir()`
        (`$TFREC_VIDEO_CACHE` or `~/.cache/tfrec_video/builtin`).
      config: a `BuiltinConfig`; default `BuiltinConfig()`.
      format: `"parquet"`, `"tfrecord"` or `"csv"`.
      progress: show progress bars when generating.

    Returns:
      The dataset folder (absolute path).

    Example:

    >>> path = ensure_builtin(config=BuiltinConfig.tiny())   # doctest: +SKIP
    >>> load_manifest(path)["counts"]["videos"]              # doctest: +SKIP
    150
    """
    cfg = BuiltinConfig() if config is None else config
    fmt = _check_format(format)
    root = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else default_cache_dir()
    name = f"builtin-{fmt}-{cfg.config_hash()}"
    path = os.path.join(root, name)
    if _is_complete(path, cfg, fmt):
        return path
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root, name)
    try:
        generate(path, cfg, fmt, progress=progress, overwrite=True)
    except OSError:
        # Another process may have finished the same dataset first.
        if not _is_complete(path, cfg, fmt):
            raise
    return path
