"""`tfrec-video embed --runner ...`: the shards embedded by an Apache Beam pipeline, on this machine or a cluster.

    driver (`step.run_embed`): checks, media CSV, identity, state (markers of a killed run folded in)
      ──► the rows of the shards not yet complete, staged in out/_embed_rows-<random>.jsonl (a line a shard)
      ──► (index, offset, length) of each ──Create──Reshuffle──► EmbedShard
            (setup: the models loaded once per worker; process: the shard's line read, `shards.embed_shard`,
             `write_table` to part-NNNNN.<ext>, then the marker _embed_done/<index>.json)
            ──► (index, rows written, counts)
    driver: the markers folded into _embed_state.json, the summary's counts summed from them; the rows file removed

A shard is embedded and written exactly as the in-process loop does it
(`shards.embed_shard`, the same `write_table`), so the output is the same file
for file whichever runner wrote it, and either kind of run resumes the other's.

**Where the workers find the rows.** Not in the elements, nor in a side input:
`beam.Create` stores its values inside the pipeline's definition, which the
driver submits in one request (Dataflow's job graph holds 10 MB: some 60,000
rows at 160 bytes a row), and a side input would hand every worker every row.
The driver writes the rows once to a file in `out`, one line of JSON a shard,
and each element is the shard's place in that file, a few bytes: a worker
reads just its shard's line (`tf.io.gfile`, so any path the package reads),
and `Reshuffle` spreads the shards over the workers.

**Models.** `EmbedShard` is built from the models' handles and options, not
from loaded models: each worker loads them once, in `setup()`, so a handle must
be readable there (a TF Hub URL, or a path every worker sees: `gs://...` on a
cluster, any local path on `DirectRunner`).

**Failures.** A broken or missing media file is counted, as in the in-process
run. An exception in a worker (an unloadable model, an `out` it cannot write)
fails the bundle, which the runner retries or gives up on: then `run_embed`
raises, the rows file is removed, and the shards marked done are skipped by the
next run. A shard written twice (a retry, a speculative copy) is written whole
each time, and its marker too.
"""

import json
import uuid
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam

from tfrec_video.data.files import open_file
from tfrec_video.data.media_embeddings import embeddings_schema
from tfrec_video.data.tables import write_table
from tfrec_video.media_embedding.encoders import load_audio_model, load_image_model, load_text_model
from tfrec_video.media_embedding.shards import ROWS_PREFIX, EmbedSummary, embed_shard, remove, shard_path, write_marker
from tfrec_video.preparation.runner import pipeline_options, run_pipeline

_LOADERS = {"image_embedding": load_image_model, "audio_embedding": load_audio_model,
            "title_embedding": load_text_model}


class EmbedShard(beam.DoFn):
    """`(index, offset, length)` of a shard's line in the rows file -> the shard's file and marker; emits
    `(index, rows written, counts)`.

    Args:
      out: the output directory.
      rows: the rows file (`stage_rows`).
      loaders: output column -> the arguments of its model's loader (`load_image_model`,
        `load_audio_model`, `load_text_model`); columns without a model are absent.
      dims: output column -> embedding width (None without a model), as the driver's models have them.
      batch_size, audio_sample_rate, zero_fill: as `run_embed`'s.
      run: the digest of the run's identity, written into each marker.
    """

    def __init__(self, out: str, rows: str, loaders: Mapping[str, tuple], dims: Mapping[str, Optional[int]],
                 batch_size: int, audio_sample_rate: int, zero_fill: bool, run: str):
        super().__init__()
        self._out, self._rows, self._loaders, self._dims = out, rows, dict(loaders), dict(dims)
        self._batch_size, self._audio_sample_rate, self._zero_fill, self._run = (batch_size, audio_sample_rate,
                                                                                 zero_fill, run)
        self._models: Dict[str, object] = {}
        self._rows_written = beam.metrics.Metrics.counter("tfrec_video.embed", "rows_written")
        self._shards_written = beam.metrics.Metrics.counter("tfrec_video.embed", "shards_written")

    def setup(self):
        self._models = {name: _LOADERS[name](*args) for name, args in self._loaders.items()}
        self._schema = embeddings_schema(*self._dims.values())

    def process(self, element: Tuple[int, int, int]):
        index, offset, length = element
        with open_file(self._rows, "rb") as f:
            f.seek(offset)
            rows = json.loads(f.read(length).decode("utf-8"))
        counts = EmbedSummary(out=self._out)
        table = embed_shard(rows, self._models, self._batch_size, self._audio_sample_rate, self._zero_fill, counts)
        written = 0 if table is None else len(table["video_id"])
        if written:
            write_table(table, shard_path(self._out, index), self._schema)
        write_marker(self._out, index, written, counts.counts(), self._run)
        self._rows_written.inc(written)
        self._shards_written.inc()
        yield index, written, counts.counts()


def stage_rows(out: str, shards: Iterable[Tuple[int, List[dict]]]) -> Tuple[str, List[Tuple[int, int, int]]]:
    """Writes the shards' rows to a new rows file in `out`, a line of JSON a shard.

    Returns:
      The file, and `(index, offset, length)` of each shard's line in it.
    """
    path = f"{out.rstrip('/')}/{ROWS_PREFIX}{uuid.uuid4().hex[:12]}.jsonl"
    places, offset = [], 0
    with open_file(path, "wb") as f:
        for index, rows in shards:
            line = (json.dumps(rows, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            places.append((index, offset, len(line)))
            offset += len(line)
    return path, places


def embed_shards(shards: Iterable[Tuple[int, List[dict]]], out: str, loaders: Mapping[str, tuple],
                 dims: Mapping[str, Optional[int]], batch_size: int, audio_sample_rate: int, zero_fill: bool,
                 run: str, pipeline_args: Sequence[str]) -> None:
    """Embeds `shards` (`(index, rows)`) on the pipeline `Create | Reshuffle | ParDo(EmbedShard)`, to the end.

    Args:
      shards: the shards to embed, with their rows (read once, as they are written to the rows file).
      out, loaders, dims, batch_size, audio_sample_rate, zero_fill, run: as `EmbedShard`'s.
      pipeline_args: the Beam pipeline options (`--runner=...` and the runner's).

    The results are the shard files and the markers in `out` (`shards.read_markers`).
    """
    pipeline_options(None, pipeline_args)  # An unknown option is refused before the rows file is written.
    rows, places = stage_rows(out, shards)

    def build(pipeline):
        _ = (pipeline
             | "Shards" >> beam.Create(places, reshuffle=False)
             | "Spread" >> beam.Reshuffle()
             | "Embed" >> beam.ParDo(EmbedShard(out, rows, loaders, dims, batch_size, audio_sample_rate,
                                                zero_fill, run)))

    try:
        run_pipeline(build, None, pipeline_args)
    finally:
        remove(rows)
