"""`prepare`: raw event logs to the package's tables, as one Apache Beam pipeline.

    event files ──event_chunks──► chunks ──ReadChunk (check; split by user bucket)──► (bucket, EventBlock)
      ──GroupByKey(user bucket)──► BucketEvents (bucket_events: sorted, capped; SplitRule.assign per user)
      ├─► train impressions/positives per catalog video ──sum──► side input (popularity, cold start)
      └─► WriteRows (bucket_rows: history, negatives) ──► <split>/part-<bucket>-of-<buckets>
    catalog ──read, checked──► catalog/part-00000.<format>
    per-user statistics ──CombineGlobally──► prepare_report.json

The same definition runs on Beam's in-process runner (the default: no service,
no download) and on Flink, Spark or Dataflow through standard pipeline options
(`--runner FlinkRunner --flink_master=...`, `--runner DataflowRunner --project
... --region ... --temp_location gs://...`). Everything a row depends on is
seeded by the user (`user_rng`) or hashed, a shard is one bucket of users
(`crc32(user) % num_shards`) with its rows sorted by user, then time, so the
output is the same with one worker or many.

**Nothing half-written.** The pipeline writes into a staging directory next
to `out` (`<out>.tmp-<random>`, which no reader lists) and renames it to
`out` only when everything, the report last, is written; on an error the
staging directory is removed and `out` is untouched. A non-empty `out` is
refused before anything runs.

**Memory.** The grouping key is a bucket of users (`tfrec_video.preparation.buckets`:
a runner's cost is per element, so one element per user was 80 % of the run),
so a worker holds one bucket's events and rows at a time, each user capped at
`max_events_per_user` (the latest kept) while they stream in. On the in-process
runner the whole log is in memory between stages, in columns (`EventBlock`).

Example:

>>> config = PrepareConfig(events="logs/*.parquet", catalog="videos.csv", out="data/",
...                        split=SplitRule("time", test_from="2026-11-01", validation_fraction=0.05))
>>> report = prepare(config)                                  # doctest: +SKIP
>>> report["splits"]["test"]["rows"], report["splits"]["test"]["cold_video_share"]  # doctest: +SKIP
(41230, 0.061)
"""

import dataclasses
import json
import os
import shutil
import time
import uuid
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from tfrec_video.data.files import TEMP_MARKER, gfile, is_local
from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.data.schema import catalog_schema
from tfrec_video.data.tables import read_table_numpy_with_files, write_table
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.preparation.buckets import bucket_count
from tfrec_video.preparation.events import event_chunks, log_columns
from tfrec_video.preparation.negatives import SAMPLING
from tfrec_video.preparation.report import ERROR_FILE, STATISTICS_FILE, split_report
from tfrec_video.preparation.runner import pipeline_options, quiet_beam_logs, run_pipeline
from tfrec_video.preparation.splits import SPLITS, SplitRule

OUTPUT_FORMATS = ("parquet", "tfrecord")
REPORT_FILE = "prepare_report.json"
RUN_CONFIG_FILE = "run_config.yaml"
_DEFAULT_NEGATIVES = 4


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What `prepare` reads, how it splits and samples, and where it writes.

    Args:
      events: the event log: files, directories or glob patterns (Parquet or CSV).
      catalog: the video table (any format the package reads).
      out: the output directory (absent or empty).
      split: a `SplitRule`.
      history_length: the most videos a row's history holds.
      negatives: negatives per event for a log without `clicked` (None: 4);
        must be 0 or None for a log with `clicked` (its non-clicks are the negatives).
      negative_sampling: `"popularity"` (training-split positives) or `"uniform"`.
      format: `"parquet"` or `"tfrecord"` for the output tables.
      num_shards: files per split (None: about one per `buckets.EVENTS_PER_BUCKET` events). A shard is
        one bucket of users, whose events and rows a worker holds while it writes them: fewer shards
        than that hold more at once.
      max_events_per_user: a user's latest events kept (None: all).
      drop_unknown: drop (and count) events of videos not in the catalog instead of failing.
      seed: seeds the negatives and the `"random"` split.
      image_dim, audio_dim, title_embedding_dim: the catalog's embedding widths, if it has them.
    """
    events: Union[str, Sequence[str]]
    catalog: Union[str, Sequence[str]]
    out: str
    split: SplitRule = SplitRule("leave-one-out")
    history_length: int = 20
    negatives: Optional[int] = None
    negative_sampling: str = "popularity"
    format: str = "parquet"
    num_shards: Optional[int] = None
    max_events_per_user: Optional[int] = 100_000
    drop_unknown: bool = False
    seed: int = 0
    image_dim: int = 1024
    audio_dim: int = 128
    title_embedding_dim: int = 384

    def __post_init__(self):
        if not isinstance(self.split, SplitRule):
            raise ConfigError(f"split must be a SplitRule, got {self.split!r}")
        for name in ("history_length", "num_shards", "image_dim", "audio_dim", "title_embedding_dim"):
            value = getattr(self, name)
            if name == "num_shards" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_events_per_user is not None and (not isinstance(self.max_events_per_user, int)
                                                     or self.max_events_per_user <= 0):
            raise ConfigError(f"max_events_per_user must be a positive integer or None, "
                              f"got {self.max_events_per_user!r}")
        if self.negatives is not None and (not isinstance(self.negatives, int) or self.negatives < 0):
            raise ConfigError(f"negatives must be an integer >= 0, got {self.negatives!r}")
        if self.negative_sampling not in SAMPLING:
            raise ConfigError(f"negative_sampling must be one of {SAMPLING}, got {self.negative_sampling!r}")
        if self.format not in OUTPUT_FORMATS:
            raise ConfigError(f"format must be one of {OUTPUT_FORMATS}, got {self.format!r}")

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["split"] = dataclasses.asdict(self.split)
        return out


def _stage_path(out: str) -> str:
    return f"{out.rstrip('/')}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"


def _check_out(out: str) -> None:
    fs = gfile()
    if fs.exists(out) and (not fs.isdir(out) or fs.listdir(out)):
        raise ConfigError(f"--out {out!r} exists and is not an empty directory; prepare writes a new directory "
                          "(remove it, or choose another)")


def _publish(stage: str, out: str) -> None:
    fs = gfile()
    if is_local(out):
        if os.path.isdir(out):
            os.rmdir(out)  # Empty (checked before the run); a concurrent writer makes this fail loudly.
        os.rename(stage, out)
        return
    for directory, _, files in fs.walk(stage):
        target = out + directory[len(stage):]
        fs.makedirs(target)
        for name in files:
            fs.rename(fs.join(directory, name), fs.join(target, name), overwrite=False)
    fs.rmtree(stage)


def _remove(stage: str) -> None:
    fs = gfile()
    if fs.exists(stage):
        if is_local(stage):
            shutil.rmtree(stage, ignore_errors=True)
        else:
            fs.rmtree(stage)


def _write_catalog(config: PrepareConfig, stage: str) -> Dict[str, np.ndarray]:
    schema = catalog_schema(config.image_dim, config.audio_dim, config.title_embedding_dim)
    columns, file_rows = read_table_numpy_with_files(config.catalog, schema)
    check_unique_ids(columns["video_id"], file_rows)
    write_table(columns, f"{stage}/catalog/part-00000.{config.format}", schema, config.format)
    return columns


def _run_config(config: PrepareConfig, splits: Dict[str, Dict[str, Any]], catalog: Dict[str, np.ndarray]) -> str:
    """The `data:` section of a run config for `tfrec-video train --config OUT/run_config.yaml`."""
    # A run config's relative paths are relative to its own file, so a local `out` can be moved as a whole.
    base = "" if is_local(config.out) else config.out.rstrip("/") + "/"
    lines = ["# Written by tfrec-video prepare: train with", f"#   tfrec-video train --config "
             f"{config.out.rstrip('/')}/{RUN_CONFIG_FILE} --output-dir runs/first", "data:",
             f"  catalog: {json.dumps(base + 'catalog')}"]
    for name in SPLITS:
        if splits.get(name, {}).get("rows"):
            lines.append(f"  {name}: {json.dumps(base + name)}")
    lines.append(f"  history_length: {config.history_length}")
    for name, field in (("image_embedding", "image_dim"), ("audio_embedding", "audio_dim"),
                        ("title_embedding", "title_embedding_dim")):
        if name in catalog:
            lines.append(f"  {field}: {getattr(config, field)}")
    return "\n".join(lines) + "\n"


def prepare(config: PrepareConfig, pipeline_args: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs the pipeline and returns the report it also writes to `out/prepare_report.json`.

    Args:
      config: a `PrepareConfig`.
      pipeline_args: Beam pipeline options (`--runner DirectRunner`, `--direct_num_workers 2`,
        `--runner FlinkRunner --flink_master localhost:8081`, ...); the default is the in-process runner.

    Raises:
      DataValidationError: bad input, naming the file, row and column.
      ConfigError: a bad option or a non-empty `out`.
    """
    with quiet_beam_logs():  # Importing Beam logs notes about cloud clients this pipeline does not use.
        from tfrec_video.preparation.beam_transforms import build

    _check_out(config.out)
    chunks = event_chunks(config.events)
    optional = log_columns(chunks)
    has_clicked = "clicked" in optional
    if has_clicked and config.negatives:
        raise ConfigError("the event log has a 'clicked' column: its non-clicked events are the negatives, so "
                          f"--negatives must be 0 (got {config.negatives})")
    negatives = 0 if has_clicked else (_DEFAULT_NEGATIVES if config.negatives is None else config.negatives)
    pipeline_options(None, pipeline_args)  # Unknown options are refused before anything is written.
    stage = _stage_path(config.out)
    start = time.time()
    try:
        catalog = _write_catalog(config, stage)
        runner = run_pipeline(
            lambda pipeline: build(pipeline, config, chunks, optional, catalog["video_id"].tolist(), negatives, stage,
                                   config.num_shards or bucket_count(sum(chunk.rows for chunk in chunks))),
            None, pipeline_args)
        if gfile().exists(f"{stage}/{ERROR_FILE}"):
            with gfile().GFile(f"{stage}/{ERROR_FILE}", "r") as handle:
                error = json.load(handle)
            raise DataValidationError(error.pop("message"), **error)
        with gfile().GFile(f"{stage}/{STATISTICS_FILE}", "r") as handle:
            statistics = json.load(handle)
        gfile().remove(f"{stage}/{STATISTICS_FILE}")
        if not statistics.get("events"):
            dropped = statistics.get("dropped_unknown", 0)
            files = sorted({chunk.path for chunk in chunks})
            if dropped:
                raise DataValidationError(f"no events are left to prepare: all {dropped} were of videos not in "
                                          "the catalog", expected="events of catalog videos")
            raise DataValidationError("the event log has no events (only headers)",
                                      file=files[0] if len(files) == 1 else None,
                                      expected="rows in " + ", ".join(files[:3]) + (" ..." if len(files) > 3 else ""))
        report = {
            "config": config.to_dict(), "runner": runner, "seconds": round(time.time() - start, 2),
            "columns": ["user_id", "video_id", "timestamp", *optional],
            "negatives_per_event": negatives,
            "test_from": config.split.test_seconds,
            "validation_from": config.split.validation_from(statistics["first_event"]),
            **split_report(statistics, config.history_length),
        }
        with gfile().GFile(f"{stage}/{RUN_CONFIG_FILE}", "w") as handle:
            handle.write(_run_config(config, report["splits"], catalog))
        with gfile().GFile(f"{stage}/{REPORT_FILE}", "w") as handle:
            json.dump(report, handle, indent=2)
        _publish(stage, config.out)
    except BaseException:
        _remove(stage)
        raise
    return report
