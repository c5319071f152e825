"""One shard of `tfrec-video embed`: its rows embedded into the output columns, its file, and its marker.

Both ways `run_embed` runs use this module, so that a shard's rows, counts and
bytes do not depend on where it was embedded: the in-process loop (`step`) and
the workers of a Beam pipeline (`beam_embed`). `embed_shard` embeds one shard's
rows with the loaded models into the table `write_table` writes to
`shard_path(out, index)`, counting missing and broken items into an
`EmbedSummary`.

**Markers.** `out/_embed_state.json` records the complete shards, but a
cluster's workers cannot all rewrite one file safely. A worker writes its
shard, then `out/_embed_done/<index>.json` (`write_marker`: atomically, a
temporary file renamed into place) with the shard's rows and counts and a
digest of the run's identity; the driver folds the markers of its run into the
state (`read_markers`, then `remove_markers` once the state is saved), when a
run starts (a killed run's finished shards are skipped) and when its pipeline
ends. The rows a Beam run's workers read are in `out/_embed_rows-<random>.jsonl`
while it runs (`beam_embed`). Readers of the table skip both (names starting with `_`).

The output directory may be local or any `tf.io.gfile` path (`gs://`, ...): a
cluster's workers must all see it, and the driver too.
"""

import dataclasses
import json
import logging
import os
import uuid
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from tfrec_video.data.files import TEMP_MARKER, gfile, is_local
from tfrec_video.media_embedding.decode import MediaError, read_audio, read_image
from tfrec_video.media_embedding.encoders import MediaModel
from tfrec_video.media_embedding.titles import embed_titles

log = logging.getLogger("tfrec_video.embed")
MARKERS = "_embed_done"
# The rows a Beam run's workers read (`beam_embed.stage_rows`): `out/_embed_rows-<random>.jsonl`.
ROWS_PREFIX = "_embed_rows-"
# The EmbedSummary fields that count items; a marker carries them for its shard.
COUNTS = ("missing_thumbnail", "missing_audio", "failed_thumbnail", "failed_audio", "zero_filled", "left_out",
          "missing_title", "failed_title")
# Output column -> the row's field it embeds.
INPUTS = (("image_embedding", "thumbnail_path"), ("audio_embedding", "audio_path"), ("title_embedding", "title"))


@dataclasses.dataclass
class EmbedSummary:
    """What an embedding run did.

    Attributes:
      out: the output directory.
      videos: rows of the media CSV.
      written: rows in the output (this run and resumed shards).
      shards_written: shards written by this run.
      shards_skipped: shards already complete from an earlier run.
      missing_thumbnail / missing_audio: empty paths.
      failed_thumbnail / failed_audio: files that do not exist or do not decode.
      missing_title: videos without a title (no row in `--titles`).
      failed_title: titles whose embedding was not finite.
      zero_filled: embeddings replaced by zeros (`zero_fill`).
      left_out: rows not written because an embedding was missing.
      image_dim / audio_dim / title_dim: embedding widths (None without that model).
    """

    out: str
    videos: int = 0
    written: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    missing_thumbnail: int = 0
    missing_audio: int = 0
    failed_thumbnail: int = 0
    failed_audio: int = 0
    zero_filled: int = 0
    left_out: int = 0
    image_dim: Optional[int] = None
    audio_dim: Optional[int] = None
    missing_title: int = 0
    failed_title: int = 0
    title_dim: Optional[int] = None

    def describe(self) -> str:
        titles = (f"titles missing {self.missing_title}, failed {self.failed_title}; "
                  if self.title_dim is not None else "")
        return (f"embedded {self.videos} videos into {self.out}: {self.written} rows written "
                f"({self.shards_written} shards written, {self.shards_skipped} already done); "
                f"thumbnails missing {self.missing_thumbnail}, failed {self.failed_thumbnail}; "
                f"audio missing {self.missing_audio}, failed {self.failed_audio}; {titles}"
                f"zero-filled {self.zero_filled}, left out {self.left_out}")

    def counts(self) -> Dict[str, int]:
        """The item counts (`COUNTS`), as a marker carries them."""
        return {name: getattr(self, name) for name in COUNTS}

    def add_counts(self, counts: Mapping[str, int]) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + int(counts.get(name, 0)))


def _finite(vector: np.ndarray, path: str, what: str, counts: EmbedSummary) -> Optional[np.ndarray]:
    # A NaN from one odd input would otherwise abort the whole run at write time, blamed on the shard file.
    if np.all(np.isfinite(vector)):
        return vector
    name = f"failed_{what}"
    setattr(counts, name, getattr(counts, name) + 1)
    log.warning("%s skipped: %s: the model's embedding is not finite (NaN or infinity)", what, path)
    return None


def _embed_images(model: MediaModel, paths: Sequence[str], counts: EmbedSummary) -> List[Optional[np.ndarray]]:
    out: List[Optional[np.ndarray]] = [None] * len(paths)
    images, where = [], []
    for i, path in enumerate(paths):
        if not path:
            counts.missing_thumbnail += 1
            continue
        try:
            images.append(read_image(path, model.input_size))
            where.append(i)
        except MediaError as error:
            counts.failed_thumbnail += 1
            log.warning("thumbnail skipped: %s", error)
    if images:
        for i, vector in zip(where, model.embed(np.stack(images))):
            out[i] = _finite(vector, paths[i], "thumbnail", counts)
    return out


def _embed_audio(model: MediaModel, paths: Sequence[str], sample_rate: int,
                 counts: EmbedSummary) -> List[Optional[np.ndarray]]:
    out: List[Optional[np.ndarray]] = [None] * len(paths)
    for i, path in enumerate(paths):
        if not path:
            counts.missing_audio += 1
            continue
        try:
            waveform = read_audio(path, sample_rate)
        except MediaError as error:
            counts.failed_audio += 1
            log.warning("audio skipped: %s", error)
            continue
        # The clip's embedding is the mean of its frames' (or log-mel patches') embeddings.
        out[i] = _finite(model.embed_clip(waveform), path, "audio", counts)
    return out


def embed_shard(rows: Sequence[Mapping[str, Optional[str]]], models: Mapping[str, object], batch_size: int,
                audio_sample_rate: int, zero_fill: bool, counts: EmbedSummary) -> Optional[Dict[str, np.ndarray]]:
    """The output table of one shard's rows, or None when no row is left to write.

    Args:
      rows: the shard's rows (`video_id`, and `thumbnail_path` / `audio_path` / `title` for its models).
      models: output column (`image_embedding`, `audio_embedding`, `title_embedding`) -> the loaded
        model, or None without one.
      batch_size: items decoded and embedded per encoder call.
      audio_sample_rate: the rate clips are resampled to.
      zero_fill: write zeros for a missing or broken item instead of leaving the row out.
      counts: the `EmbedSummary` whose item counts (`COUNTS`) are updated.

    Returns:
      `{"video_id": object array, name: float32 [rows, dim], ...}` for `write_table`.
    """
    vectors: Dict[str, List[Optional[np.ndarray]]] = {}
    for name, column in INPUTS:
        model = models.get(name)
        if model is None:
            continue
        found: List[Optional[np.ndarray]] = []
        for b in range(0, len(rows), batch_size):
            items = [row[column] for row in rows[b:b + batch_size]]
            if name == "image_embedding":
                found += _embed_images(model, items, counts)
            elif name == "audio_embedding":
                found += _embed_audio(model, items, audio_sample_rate, counts)
            else:
                found += embed_titles(model, items, counts)
        vectors[name] = found
    columns: Dict[str, list] = {"video_id": [], **{name: [] for name in vectors}}
    for i, row in enumerate(rows):
        items = {name: found[i] for name, found in vectors.items()}
        if any(v is None for v in items.values()) and not zero_fill:
            counts.left_out += 1
            continue
        columns["video_id"].append(row["video_id"])
        for name, vector in items.items():
            if vector is None:
                counts.zero_filled += 1
                vector = np.zeros(models[name].output_dim, np.float32)
            columns[name].append(np.asarray(vector, np.float32))
    if not columns["video_id"]:
        return None
    return {k: (np.stack(v) if k != "video_id" else np.array(v, object)) for k, v in columns.items()}


def extension(out: str) -> str:
    """The table extension of `out` (`.parquet`, `.tfrecord.gz`, ...), which its shards carry."""
    name = os.path.basename(out.rstrip("/"))
    for ext in (".tfrecord.gz", ".tfrec.gz", ".tfrecords.gz", ".tfrecord", ".tfrec", ".tfrecords", ".parquet", ".pq"):
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1]


def shard_path(out: str, index: int) -> str:
    return f"{out.rstrip('/')}/part-{index:05d}{extension(out)}"


# -- files, local or tf.io.gfile (a cluster's output directory is often remote) --------------------------------


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else gfile().exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(path) if is_local(path) else gfile().isdir(path)


def listdir(path: str) -> List[str]:
    if is_local(path):
        return os.listdir(path) if os.path.isdir(path) else []
    return [name.rstrip("/") for name in gfile().listdir(path)] if gfile().isdir(path) else []


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        gfile().makedirs(path)


def remove(path: str) -> None:
    """Removes the file `path`, if it exists."""
    if is_local(path):
        if os.path.exists(path):
            os.remove(path)
    elif gfile().exists(path):
        gfile().remove(path)


def read_json(path: str):
    if is_local(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    with gfile().GFile(path, "r") as f:
        return json.load(f)


def write_json(path: str, value, temp: Optional[str] = None) -> None:
    """Writes `value` to `path` atomically: to `temp` (default `path + ".tmp"`), then renamed over `path`."""
    temp = temp or path + ".tmp"
    if is_local(path):
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1)
        os.replace(temp, path)
        return
    with gfile().GFile(temp, "w") as f:
        f.write(json.dumps(value, indent=1))
    gfile().rename(temp, path, overwrite=True)


# -- markers -----------------------------------------------------------------------------------------------------


def _marker_path(out: str, index: int) -> str:
    return f"{out.rstrip('/')}/{MARKERS}/{index}.json"


def write_marker(out: str, index: int, rows: int, counts: Mapping[str, int], run: str) -> None:
    """Records shard `index` as complete (`rows` written): call it after the shard's file is in place.

    Args:
      out: the output directory.
      index: the shard.
      rows: the rows its file holds (0: no file).
      counts: its item counts (`EmbedSummary.counts`).
      run: the digest of the run's identity; `read_markers` of another run ignores the marker.
    """
    makedirs(f"{out.rstrip('/')}/{MARKERS}")
    path = _marker_path(out, index)
    # A name of its own: a retried or speculative copy of the shard may write the same marker at the same time.
    write_json(path, {"rows": int(rows), "counts": dict(counts), "run": run},
               temp=f"{path}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")


def read_markers(out: str, run: str) -> Dict[int, dict]:
    """`{index: {"rows", "counts", "run"}}` of the markers in `out` that run `run` wrote."""
    found = {}
    for name in listdir(f"{out.rstrip('/')}/{MARKERS}"):
        stem = name[:-len(".json")]
        if not name.endswith(".json") or not stem.isdigit():
            continue  # an unfinished write (`<index>.json.tmp-...`)
        marker = read_json(_marker_path(out, int(stem)))
        if marker.get("run") != run:
            log.warning("embed: ignoring %s: another embedding run wrote it", _marker_path(out, int(stem)))
            continue
        found[int(stem)] = marker
    return found


def remove_markers(out: str, indices: Iterable[int]) -> None:
    """Removes the markers of `indices` (once the state records them), and their directory when it is empty."""
    for index in indices:
        remove(_marker_path(out, index))
    directory = f"{out.rstrip('/')}/{MARKERS}"
    if is_local(directory) and os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)


def remove_rows_files(out: str) -> None:
    """Removes the rows files of Beam runs in `out` (a killed run's; a pipeline of it still running then fails)."""
    for name in listdir(out):
        if name.startswith(ROWS_PREFIX):
            remove(f"{out.rstrip('/')}/{name}")
