"""The Beam transforms of `prepare`: read, group by user bucket, write each bucket's rows, sum statistics.

`build(pipeline, ...)` adds them to a pipeline (`prepare` runs it). Each step
is a plain function of its input (`read_events`, `bucket_events`,
`SplitRule.assign`, `user_rows`), so what the transforms add is only the
plumbing: keys, side inputs and the files they write. Users are grouped by
bucket, not one by one (`tfrec_video.preparation.buckets`: a runner's cost is
per element).
"""

import json
from typing import Any, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tfrec_video.data.files import gfile
from tfrec_video.data.schema import impressions_schema
from tfrec_video.data.tables import write_table
from tfrec_video.preparation.buckets import bucket_events, split_by_bucket
from tfrec_video.preparation.events import EventChunk, read_events
from tfrec_video.preparation.negatives import NegativeSampler, user_rng
from tfrec_video.errors import DataValidationError
from tfrec_video.preparation.report import ERROR_FILE, STATISTICS_FILE, bucket_statistics, merge_statistics
from tfrec_video.preparation.splits import SPLITS, TRAIN
from tfrec_video.preparation.user_rows import bucket_rows, event_hours

class ReadChunk(beam.DoFn):
    """EventChunk -> (bucket, EventBlock) per user bucket of the chunk; tagged `first` (min timestamp),
    `dropped` (unknown videos) and `errors` (the chunk's first bad row, as data)."""

    def __init__(self, known_videos: Sequence[str], drop_unknown: bool, columns: Sequence[str], buckets: int):
        self._known = list(known_videos)
        self._drop = drop_unknown
        self._columns = tuple(columns)
        self._buckets = buckets
        self._set = None

    def setup(self):
        self._set = frozenset(self._known)

    def process(self, chunk: EventChunk):
        try:
            block, dropped = read_events(chunk, self._set, self._drop, self._columns)
        except DataValidationError as error:
            # Sent as data, not raised: the driver reports the first bad row in input order, whichever worker
            # met it first, with its file, row and feature (a raised error reaches the driver as text).
            yield beam.pvalue.TaggedOutput("errors", ((chunk.file_index, chunk.row_offset), {
                "message": error.reason, "file": error.file, "row": error.row, "line": error.line,
                "feature": error.feature, "expected": error.expected}))
            return
        if dropped:
            yield beam.pvalue.TaggedOutput("dropped", dropped)
        if len(block):
            yield beam.pvalue.TaggedOutput("first", int(block.timestamp.min()))
            yield from split_by_bucket(block, self._buckets)


def _bucket_events(item, split_rule, max_events, first, negatives):
    """(bucket, blocks) -> (bucket, (BucketEvents, each event's split))."""
    bucket, blocks = item
    # Only the cap can drop a click, and only negatives need every click.
    merged = bucket_events(blocks, max_events, track_clicked=bool(negatives) and max_events is not None)
    validation_from = split_rule.validation_from(first) if first is not None else None
    events = merged.events
    split = np.zeros(len(events), np.int8)
    for user, a, b in merged.users():
        split[a:b] = split_rule.assign(events.timestamp[a:b], events.order[a:b], user, validation_from)
    return bucket, (merged, split)


class TrainCounts(beam.DoFn):
    """(bucket, (events, split)) -> `[2, catalog]` int64: each catalog video's train impressions and positives."""

    def __init__(self, catalog_ids: Sequence[str]):
        self._catalog_ids = list(catalog_ids)
        self._catalog = None

    def setup(self):
        self._catalog = pa.array(self._catalog_ids, pa.string())

    def process(self, item):
        _, (merged, split) = item
        counts = np.zeros((2, len(self._catalog_ids)), np.int64)
        if len(split):
            train = split == TRAIN
            index = pc.index_in(pa.array(merged.events.video_id[train], pa.string()), value_set=self._catalog)
            index = index.to_numpy(zero_copy_only=False).astype(np.int64)  # Every video is in the catalog.
            counts[0] = np.bincount(index, minlength=len(self._catalog_ids))
            counts[1] = np.bincount(index, weights=merged.events.clicked[train], minlength=len(self._catalog_ids))
        yield counts


def _earliest(times):
    return min((t for t in times if t is not None), default=None)


def _sum_arrays(arrays):
    total = None
    for a in arrays:
        total = a.copy() if total is None else total + a
    return total


class _SeenVideos:
    """`video in seen`: whether the train split shows the video (its impressions count is not 0)."""

    def __init__(self, catalog_ids: Sequence[str], impressions: np.ndarray):
        self._seen = {v for v, n in zip(catalog_ids, impressions.tolist()) if n}

    def __contains__(self, video) -> bool:
        return video in self._seen


class WriteRows(beam.DoFn):
    """(bucket, (events, split)) -> the bucket's rows written as shard `bucket` of each split; tagged
    `statistics` (the only output: a shard holds exactly one bucket's users, so no second shuffle)."""

    def __init__(self, config, negatives: int, catalog_ids: Sequence[str], stage: str, buckets: int):
        self._config = config
        self._negatives = negatives
        self._catalog_ids = list(catalog_ids)
        self._stage = stage
        self._buckets = buckets
        self._sampler = self._seen = None

    def _prepare(self, counts):
        # The side input is one array for the whole run: built into a sampler once per DoFn instance.
        if self._seen is None:
            self._seen = _SeenVideos(self._catalog_ids, counts[0])
            if self._negatives:
                popularity = self._config.negative_sampling == "popularity"
                self._sampler = NegativeSampler(self._catalog_ids, counts[1] if popularity else None)

    def process(self, item, counts):
        self._prepare(counts)
        bucket, (merged, split) = item
        config, events, starts = self._config, merged.events, merged.starts
        rows = bucket_rows(events, starts, config.history_length, self._negatives, self._sampler,
                           lambda user: user_rng(config.seed, user), merged.clicked)
        event = rows.event
        sizes = np.diff(starts)
        user_of_event = np.repeat(np.arange(len(sizes)), sizes)
        row_split = split[event].astype(np.int64)
        has_train = np.zeros(len(sizes), bool)
        np.logical_or.at(has_train, user_of_event, split == TRAIN)
        lengths = np.fromiter((len(h) for h in rows.history), np.int64, len(event))
        cold = np.fromiter((v not in self._seen for v in rows.video_id.tolist()), bool, len(event))
        # Events are sorted by user then time, so each split's rows are too: the shard needs no sort.
        columns = {"user_id": events.user_id[event], "hour": event_hours(events)[event], "video_id": rows.video_id,
                   "clicked": rows.clicked, "timestamp": events.timestamp[event]}
        if events.device is not None:
            columns["device"] = events.device[event]
        schema = impressions_schema(config.history_length)
        for s in np.unique(row_split).tolist():
            take = np.flatnonzero(row_split == s)
            part = {name: values[take] for name, values in columns.items()}
            part["history"] = [rows.history[i] for i in take.tolist()]
            path = f"{self._stage}/{SPLITS[s]}/part-{bucket:05d}-of-{self._buckets:05d}.{config.format}"
            write_table(part, path, schema, config.format)
        yield bucket_statistics(row_split, user_of_event[event], rows.clicked, lengths, cold, has_train, sizes,
                                merged.dropped, rows.short, events.timestamp, config.history_length)


def _first_error(errors):
    """The error of the earliest chunk in input order (None: no error)."""
    return min((e for e in errors if e is not None), key=lambda e: e[0], default=None)


def _write_json(value, stage: str, name: str):
    if value is not None:
        with gfile().GFile(f"{stage}/{name}", "w") as handle:
            json.dump(value[1] if name == ERROR_FILE else value, handle)


def build(pipeline, config, chunks: Sequence[EventChunk], columns: Sequence[str], catalog_ids: Sequence[str],
          negatives: int, stage: str, buckets: int = 1) -> None:
    """Adds the whole `prepare` pipeline to `pipeline` (see `tfrec_video.preparation.pipeline`)."""
    read = (pipeline
            | "Chunks" >> beam.Create(list(chunks))
            # Chunks are few and large: spread them over workers before the heavy read.
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadChunk(catalog_ids, config.drop_unknown, columns, buckets)).with_output_types(
                Tuple[int, Any]).with_outputs(
                "first", "dropped", "errors", main="events"))
    first = read.first | "First" >> beam.CombineGlobally(_earliest)
    dropped = read.dropped | "Dropped" >> beam.CombineGlobally(sum)
    users = (read.events
             | "ByBucket" >> beam.GroupByKey()
             | "BucketEvents" >> beam.Map(_bucket_events, config.split, config.max_events_per_user,
                                          beam.pvalue.AsSingleton(first), negatives))
    counts = (users
              | "TrainCounts" >> beam.ParDo(TrainCounts(catalog_ids))
              | "SumCounts" >> beam.CombineGlobally(_sum_arrays))
    _ = (users
         | "WriteRows" >> beam.ParDo(WriteRows(config, negatives, catalog_ids, stage, buckets),
                                     beam.pvalue.AsSingleton(counts))
         | "Statistics" >> beam.CombineGlobally(merge_statistics)
         | "AddLog" >> beam.Map(lambda s, d, f: {**s, "dropped_unknown": d, "first_event": f},
                                beam.pvalue.AsSingleton(dropped), beam.pvalue.AsSingleton(first))
         | "SaveStatistics" >> beam.Map(_write_json, stage, STATISTICS_FILE))
    _ = (read.errors
         | "FirstError" >> beam.CombineGlobally(_first_error)
         | "SaveError" >> beam.Map(_write_json, stage, ERROR_FILE))
