"""The Beam transforms of `prepare`: read, group by user, make rows, write shards, sum statistics.

`build(pipeline, ...)` adds them to a pipeline (`prepare` runs it). Each step
is a plain function of its input (`read_events`, `cap_events`,
`SplitRule.assign`, `user_rows`), so what the transforms add is only the
plumbing: keys, side inputs and the files they write.
"""

import json
import zlib
from typing import Any, Dict, List, Sequence, Tuple

import apache_beam as beam
import numpy as np

from tfrec_video.data.files import gfile
from tfrec_video.data.schema import impressions_schema
from tfrec_video.data.tables import write_table
from tfrec_video.preparation.events import EventChunk, read_events
from tfrec_video.preparation.negatives import NegativeSampler, user_rng
from tfrec_video.errors import DataValidationError
from tfrec_video.preparation.report import ERROR_FILE, STATISTICS_FILE, merge_statistics, user_statistics
from tfrec_video.preparation.splits import SPLITS, TRAIN
from tfrec_video.preparation.user_rows import cap_events, user_rows

class ReadChunk(beam.DoFn):
    """EventChunk -> (user, EventBlock) per user of the chunk; tagged `first` (min timestamp) and `dropped`."""

    def __init__(self, known_videos: Sequence[str], drop_unknown: bool, columns: Sequence[str]):
        self._known = list(known_videos)
        self._drop = drop_unknown
        self._columns = tuple(columns)
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
            users, inverse = np.unique(block.user_id.astype(str), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0, True]).tolist()
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                yield str(users[i]), block.take(order[a:b])


def _user_events(item, split_rule, max_events, first, negatives):
    user, blocks = item
    clicked = set() if negatives and max_events is not None else None  # Only the cap can drop a click.
    events, dropped = cap_events(blocks, max_events, clicked)
    if clicked is not None and not dropped:
        clicked = None  # user_rows reads them from the events, as cheaply.
    validation_from = split_rule.validation_from(first) if first is not None else None
    return user, (events, split_rule.assign(events.timestamp, events.order, user, validation_from), dropped, clicked)


def _train_videos(item):
    """(video, (train impressions, train positives)) of one user."""
    _, (events, split, _, _) = item
    train = split == TRAIN
    counts: Dict[str, List[int]] = {}
    for video, clicked in zip(events.video_id[train].tolist(), events.clicked[train].tolist()):
        c = counts.setdefault(video, [0, 0])
        c[0] += 1
        c[1] += clicked
    return [(v, tuple(c)) for v, c in counts.items()]


def _earliest(times):
    return min((t for t in times if t is not None), default=None)


def _sum_pairs(pairs):
    a = b = 0
    for x, y in pairs:
        a += x
        b += y
    return a, b


class MakeRows(beam.DoFn):
    """(user, events) -> ((split, shard), rows); tagged `statistics`: the user's `user_statistics`."""

    def __init__(self, config, negatives: int, catalog_ids: Sequence[str]):
        self._config = config
        self._negatives = negatives
        self._catalog_ids = list(catalog_ids)
        self._sampler = None
        self._sampler_of = None

    def _sampler_for(self, train_videos):
        if self._sampler_of is not train_videos:
            if self._config.negative_sampling == "uniform":
                self._sampler = NegativeSampler(self._catalog_ids)
            else:
                ids = sorted(train_videos)
                self._sampler = NegativeSampler(ids, [train_videos[v][1] for v in ids])
            self._sampler_of = train_videos
        return self._sampler

    def process(self, item, train_videos):
        user, (events, split, dropped, clicked) = item
        sampler = self._sampler_for(train_videos) if self._negatives else None
        rows, short = user_rows(user, events, split, self._config.history_length, self._negatives, sampler,
                                user_rng(self._config.seed, user) if self._negatives else None, clicked)
        yield beam.pvalue.TaggedOutput("statistics", user_statistics(
            rows, train_videos, len(events), dropped, short, self._config.history_length))
        shard = _shard(user, self._config.num_shards)
        for s, columns in rows.items():
            yield (SPLITS[s], shard), (user, columns)


def _shard(user: str, shards: int) -> int:
    return zlib.crc32(user.encode("utf-8")) % shards


def _write_shard(item, stage: str, config):
    """Writes one shard's rows, sorted by user (the rows of a user are already in time order)."""
    (split, shard), users = item
    users = sorted(users, key=lambda pair: pair[0])
    names = list(users[0][1])
    columns = {name: [v for _, rows in users for v in rows[name]] for name in names}
    schema = impressions_schema(config.history_length)
    path = f"{stage}/{split}/part-{shard:05d}-of-{config.num_shards:05d}.{config.format}"
    write_table(columns, path, schema, config.format)
    return path


def _first_error(errors):
    """The error of the earliest chunk in input order (None: no error)."""
    return min((e for e in errors if e is not None), key=lambda e: e[0], default=None)


def _write_json(value, stage: str, name: str):
    if value is not None:
        with gfile().GFile(f"{stage}/{name}", "w") as handle:
            json.dump(value[1] if name == ERROR_FILE else value, handle)


def build(pipeline, config, chunks: Sequence[EventChunk], columns: Sequence[str], catalog_ids: Sequence[str],
          negatives: int, stage: str) -> None:
    """Adds the whole `prepare` pipeline to `pipeline` (see `tfrec_video.preparation.pipeline`)."""
    read = (pipeline
            | "Chunks" >> beam.Create(list(chunks))
            # Chunks are few and large: spread them over workers before the heavy read.
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadChunk(catalog_ids, config.drop_unknown, columns)).with_output_types(
                Tuple[str, Any]).with_outputs(
                "first", "dropped", "errors", main="events"))
    first = read.first | "First" >> beam.CombineGlobally(_earliest)
    dropped = read.dropped | "Dropped" >> beam.CombineGlobally(sum)
    users = (read.events
             | "ByUser" >> beam.GroupByKey()
             | "UserEvents" >> beam.Map(_user_events, config.split, config.max_events_per_user,
                                        beam.pvalue.AsSingleton(first), negatives))
    train_videos = (users
                    | "TrainVideos" >> beam.FlatMap(_train_videos)
                    | "SumVideos" >> beam.CombinePerKey(_sum_pairs))
    made = users | "Rows" >> beam.ParDo(MakeRows(config, negatives, catalog_ids),
                                        beam.pvalue.AsDict(train_videos)).with_output_types(
                                            Tuple[Tuple[str, int], Any]).with_outputs("statistics", main="rows")
    _ = (made.rows
         | "ByShard" >> beam.GroupByKey()
         | "Write" >> beam.Map(_write_shard, stage, config))
    _ = (made.statistics
         | "Statistics" >> beam.CombineGlobally(merge_statistics)
         | "AddLog" >> beam.Map(lambda s, d, f: {**s, "dropped_unknown": d, "first_event": f},
                                beam.pvalue.AsSingleton(dropped), beam.pvalue.AsSingleton(first))
         | "SaveStatistics" >> beam.Map(_write_json, stage, STATISTICS_FILE))
    _ = (read.errors
         | "FirstError" >> beam.CombineGlobally(_first_error)
         | "SaveError" >> beam.Map(_write_json, stage, ERROR_FILE))
