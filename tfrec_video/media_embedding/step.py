"""`tfrec-video embed`: raw thumbnails, audio and titles → `image_embedding` / `audio_embedding` /
`title_embedding` features.

    media.csv ──► decode (tf.io.decode_image / tensorflow-io audio) ──► pretrained encoder(s) ──► shards
    titles (media.csv's title column, or --titles TABLE) ──► pretrained text encoder ──┘

**Input.** A CSV with the header `video_id,thumbnail_path,audio_path` (other
columns are ignored). Paths are relative to the CSV's directory (absolute paths
and `scheme://` paths work too); an empty path means the video has no thumbnail
or no audio track. `--text-model` embeds titles: the CSV's `title` column, or
`--titles TABLE` (then the CSV may be left out); `tfrec_video.media_embedding.titles`
says which videos and titles are embedded.

**Output.** `--out` names a table in the package's formats, by its extension
(`emb.parquet`, `emb.tfrecord`, `.tfrecord.gz`): a *directory* of shards
`part-00000.<ext>`, `part-00001.<ext>`, ... of `--shard-size` rows each, with
the columns `video_id` and `image_embedding`, `audio_embedding` and/or
`title_embedding` (only the modalities a model was given for). Every reader of
the package reads the directory as one table, and `tfrec_video.data.media_embeddings.attach_embeddings`
(or `data.embeddings` in a `tfrec-video train` config) joins it into the
catalog by `video_id`.

**Missing and broken media.** A missing path, a file that does not exist or
does not decode is logged (logger `tfrec_video.embed`, with the path and the
reason) and counted, and the run goes on. Such a video has no embedding for
that modality, and nothing is invented for it: its row is left out of the
output, unless `--zero-fill` asks for a zero vector in place of each missing
embedding. The summary reports every count.

**Audio models.** A clip is decoded to 16 kHz mono (`--audio-sample-rate`) and
embedded whole: a waveform model sees frames of its input length, the frames'
embeddings averaged. A `.tflite` model whose input is a log-mel patch (YAMNet's
`yamnet_spectra_in.tflite`: `[1, 96, 64]`) gets the patches that
`media_embedding.log_mel` computes in TF (0.96 s each, every 0.48 s; a clip
shorter than one patch is padded with silence), the patches' embeddings
averaged. The embedding is the tensor `--audio-output-tensor` names (any
tensor of the graph, intermediate ones included); by default a known embedding
tensor (YAMNet's 1024-d `tower0/network/layer28/reduce_mean`), else the
model's output. (The TF Hub YAMNet takes waveforms; `--audio-output-key 1`
picks its embedding.)

**Resuming.** A shard is written atomically (a temporary file renamed into
place) and recorded in `out/_embed_state.json` when it is complete. Running the
same command again skips complete shards, so an interrupted run resumes where
it stopped. The state also records the CSV's content hash, the models (local
paths made absolute), the hash of the titles embedded, and every option that
changes the vectors (input size, output key, sample rate, frame length, pixel
range, zero-fill, shard size, and for a `.tflite` audio model the tensor it
reads and its log-mel front end): a run with another CSV, model, titles or
option refuses to mix its shards with the old ones (choose another `--out`, or
delete it). An embedding that the model returns with a NaN or infinity counts
as a failed item, like an undecodable file.

Example:

    tfrec-video embed --catalog media.csv \\
        --image-model ../shared/pretrained/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \\
        --audio-model ../shared/pretrained/audio/yamnet_spectra_in.tflite --out emb.parquet
"""

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import detect_format, open_file
from tfrec_video.data.media_embeddings import STATE_FILE, embeddings_schema
from tfrec_video.data.tables import write_table
from tfrec_video.errors import ConfigError, DataValidationError, shorten
from tfrec_video.media_embedding.decode import MediaError, read_audio, read_image
from tfrec_video.media_embedding.encoders import MediaModel, load_audio_model, load_image_model, load_text_model
from tfrec_video.media_embedding.titles import embed_titles, titled_rows

log = logging.getLogger("tfrec_video.embed")
COLUMNS = ("video_id", "thumbnail_path", "audio_path")


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


def read_media_csv(path: str, columns: Sequence[str] = COLUMNS) -> List[Dict[str, str]]:
    """The rows of a media CSV, with paths resolved against its directory, and `title` when it has one.

    Args:
      path: the CSV.
      columns: the columns it must have.

    Raises:
      DataValidationError: the file is missing, not UTF-8, lacks a column, has
        an empty or duplicate `video_id`, or has no rows.
    """
    header = ",".join(columns)
    try:
        with open_file(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataValidationError("not UTF-8 text", file=path, expected="a UTF-8 CSV file") from None
    except (OSError, tf.errors.OpError):
        raise DataValidationError("cannot read the file (does it exist?)", file=path,
                                  expected=f"a CSV with the header {header}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise DataValidationError(f"the header lacks the columns {missing} (it has {reader.fieldnames})",
                                  file=path, expected=f"the header {header}")
    base = os.path.dirname(path)
    rows, seen = [], {}
    for row in reader:
        line = reader.line_num  # the line an editor shows (the header is line 1)
        video_id = (row["video_id"] or "").strip()
        if not video_id:
            raise DataValidationError("empty video_id", file=path, line=line, feature="video_id",
                                      expected="a non-empty id")
        if video_id in seen:
            raise DataValidationError(f"duplicate video_id {shorten(video_id)} (first on line {seen[video_id]})",
                                      file=path, line=line, feature="video_id", expected="unique ids")
        seen[video_id] = line
        resolved = {"video_id": video_id}
        if "title" in reader.fieldnames:
            resolved["title"] = row["title"] or ""
        for column in ("thumbnail_path", "audio_path"):
            value = (row.get(column) or "").strip()
            if value and "://" not in value and not os.path.isabs(value):
                value = os.path.join(base, value)
            resolved[column] = value
        rows.append(resolved)
    if not rows:
        raise DataValidationError("no rows", file=path, expected="one row per video")
    return rows


def _output_format(out: str) -> str:
    try:
        fmt = detect_format(out)
        if fmt == "csv":
            raise DataValidationError("csv")
        return fmt
    except DataValidationError:
        raise ConfigError(f"--out {out!r}: the name must end in .parquet, .tfrecord or .tfrecord.gz (the "
                          "output format; CSV cannot hold embeddings compactly).") from None


def _extension(out: str) -> str:
    name = os.path.basename(out.rstrip("/"))
    for ext in (".tfrecord.gz", ".tfrec.gz", ".tfrecords.gz", ".tfrecord", ".tfrec", ".tfrecords", ".parquet", ".pq"):
        if name.endswith(ext):
            return ext
    return os.path.splitext(name)[1]


def _shard_path(out: str, index: int) -> str:
    return os.path.join(out, f"part-{index:05d}{_extension(out)}")


def _load_state(out: str, identity: dict) -> dict:
    path = os.path.join(out, STATE_FILE)
    if not os.path.exists(path):
        if os.path.isdir(out) and [n for n in os.listdir(out) if not n.startswith((".", "_"))]:
            raise ConfigError(f"--out {out!r} already holds files that no embedding run wrote; choose another "
                              "--out or empty it.")
        return {"identity": identity, "shards": {}}
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if state.get("identity") != identity:
        changed = sorted(k for k in set(identity) | set(state.get("identity", {}))
                         if identity.get(k) != state.get("identity", {}).get(k))
        raise ConfigError(f"--out {out!r} holds shards of another embedding run ({', '.join(changed)} differ); "
                          "choose another --out, or delete it to start over.")
    return state


def _model_identity(handle: Optional[str]) -> Optional[str]:
    # The same file named from another directory is the same model; another file at the same relative path is not.
    if not handle or "://" in handle:
        return handle
    return os.path.abspath(handle)


def _save_state(out: str, state: dict) -> None:
    path = os.path.join(out, STATE_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
    os.replace(path + ".tmp", path)


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


def _finite(vector: np.ndarray, path: str, what: str, counts: EmbedSummary) -> Optional[np.ndarray]:
    # A NaN from one odd input would otherwise abort the whole run at write time, blamed on the shard file.
    if np.all(np.isfinite(vector)):
        return vector
    name = f"failed_{what}"
    setattr(counts, name, getattr(counts, name) + 1)
    log.warning("%s skipped: %s: the model's embedding is not finite (NaN or infinity)", what, path)
    return None


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


def run_embed(
    catalog: Optional[str],
    out: str,
    image_model: Optional[str] = None,
    audio_model: Optional[str] = None,
    batch_size: int = 32,
    shard_size: int = 1000,
    zero_fill: bool = False,
    image_size: Optional[int] = None,
    image_range="auto",
    image_output_key=None,
    audio_sample_rate: int = 16000,
    audio_clip_seconds: float = 1.0,
    audio_output_key=None,
    audio_output_tensor: Optional[str] = None,
    progress: bool = True,
    text_model: Optional[str] = None,
    titles: Optional[str] = None,
) -> EmbedSummary:
    """Embeds the media listed in `catalog` into the sharded table `out` (see the module docstring).

    Args:
      catalog: the media CSV (`video_id,thumbnail_path,audio_path`, and `title`
        for `text_model` without `titles`); None with `titles` and no media model.
      out: the output directory, named with the table's extension (`emb.parquet`).
      image_model: a TF Hub handle, SavedModel directory or `.tflite` image encoder.
      audio_model: the same for audio.
      batch_size: images decoded and embedded per encoder call.
      shard_size: rows per output shard (the unit of resuming).
      zero_fill: write zeros for a missing or broken item instead of leaving the row out.
      image_size: the image size of a hub model that does not declare it.
      image_range: the float range a `.tflite` image model takes (`"auto"` or `(low, high)`).
      image_output_key: the output of a hub image model returning several.
      audio_sample_rate: the rate the audio model expects; clips are resampled to it.
      audio_clip_seconds: the frame length a hub audio model takes.
      audio_output_key: the output of a hub audio model returning several (YAMNet: 1), or a
        `.tflite` model's output index.
      audio_output_tensor: the tensor of a `.tflite` audio model read as the embedding
        (default: a known embedding tensor such as YAMNet's, else the model's output).
      progress: show a tqdm progress bar.
      text_model: a TF Hub handle or SavedModel directory of a text encoder
        (string `[batch]` -> `[batch, dim]`): writes `title_embedding`.
      titles: a catalog table (any format) whose `title` of each `video_id`
        is embedded, instead of the media CSV's `title` column.

    Returns:
      An `EmbedSummary`.

    Raises:
      ConfigError: no model, an unusable model, bad sizes, or an `out` of another run.
      DataValidationError: a malformed media CSV.
    """
    media = bool(image_model or audio_model)
    if not media and not text_model:
        raise ConfigError("embed: give --image-model, --audio-model or both, and/or --text-model.")
    if not catalog and (media or not titles):
        raise ConfigError("embed: give --catalog CSV (the media CSV; --image-model and --audio-model need it), or "
                          "--titles TABLE with --text-model alone.")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"embed: {name} must be a positive integer, got {value!r}.")
    fmt = _output_format(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out!r} is a file; embed writes a directory of shards there "
                          f"(part-00000{_extension(out)}, ...). Choose another --out, or remove the file.")
    needed = ("video_id",) + (COLUMNS[1:] if media else ()) + (("title",) if text_model and not titles else ())
    rows = read_media_csv(catalog, needed) if catalog else None
    digest = None
    if catalog:
        with open_file(catalog, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    titles_digest = None
    if text_model:
        rows, titles_digest = titled_rows(rows, titles)
    text = load_text_model(text_model) if text_model else None
    images = load_image_model(image_model, image_size, image_range, image_output_key) if image_model else None
    audio = (load_audio_model(audio_model, audio_sample_rate, audio_clip_seconds, audio_output_key, audio_output_tensor)
             if audio_model else None)
    # Everything that changes the vectors, as resolved (the input size the model declares rather than the
    # flag), so that `--image-size 224` on a model that says 224 still resumes.
    identity = {"catalog_sha256": digest, "image_model": _model_identity(image_model),
                "audio_model": _model_identity(audio_model), "shard_size": shard_size, "zero_fill": bool(zero_fill),
                "image_range": list(image_range) if not isinstance(image_range, str) else image_range,
                "image_size": list(images.input_size) if images else None,
                "image_output_key": image_output_key if images else None,
                "audio_sample_rate": audio_sample_rate, "audio_frame_samples": audio.input_size if audio else None,
                "audio_output_key": audio_output_key if audio else None, "format": fmt}
    # A `.tflite` audio model adds the tensor it reads and its log-mel front end (audio_output_tensor,
    # audio_front_end); absent for other models, so their earlier runs still resume.
    identity.update({f"audio_{k}": v for k, v in (audio.state_options() if audio else {}).items()})
    if text:  # absent without a text model, so that earlier runs still resume
        identity.update(text_model=_model_identity(text_model), titles_sha256=titles_digest)
    state = _load_state(out, identity)
    os.makedirs(out, exist_ok=True)
    # Saved before the first shard: a run killed right after renaming shard 0 into place must still resume,
    # not find a directory of shards that "no embedding run wrote".
    _save_state(out, state)
    summary = EmbedSummary(out=out, videos=len(rows), image_dim=images.output_dim if images else None,
                           audio_dim=audio.output_dim if audio else None, title_dim=text.output_dim if text else None)
    # attach_embeddings reads the widths from here.
    dims = {"image_embedding": summary.image_dim, "audio_embedding": summary.audio_dim,
            "title_embedding": summary.title_dim}
    state["widths"] = dict(dims)
    schema = embeddings_schema(*dims.values())
    from tqdm.auto import tqdm

    bar = tqdm(total=len(rows), unit="video", desc="embed", disable=not progress)
    for index, start in enumerate(range(0, len(rows), shard_size)):
        shard = rows[start:start + shard_size]
        done = state["shards"].get(str(index))
        if done is not None and (done["rows"] == 0 or os.path.exists(_shard_path(out, index))):
            summary.shards_skipped += 1
            summary.written += done["rows"]
            bar.update(len(shard))
            continue
        columns: Dict[str, list] = {"video_id": []}
        vectors = {}
        for name, model, column in (("image_embedding", images, "thumbnail_path"),
                                    ("audio_embedding", audio, "audio_path"), ("title_embedding", text, "title")):
            if model is None:
                continue
            columns[name] = []
            found: List[Optional[np.ndarray]] = []
            for b in range(0, len(shard), batch_size):
                paths = [row[column] for row in shard[b:b + batch_size]]
                if name == "image_embedding":
                    found += _embed_images(model, paths, summary)
                elif name == "audio_embedding":
                    found += _embed_audio(model, paths, audio_sample_rate, summary)
                else:
                    found += embed_titles(model, paths, summary)
            vectors[name] = found
        for i, row in enumerate(shard):
            items = {name: found[i] for name, found in vectors.items()}
            if any(v is None for v in items.values()) and not zero_fill:
                summary.left_out += 1
                continue
            columns["video_id"].append(row["video_id"])
            for name, vector in items.items():
                if vector is None:
                    summary.zero_filled += 1
                    vector = np.zeros(dims[name], np.float32)
                columns[name].append(np.asarray(vector, np.float32))
        written = len(columns["video_id"])
        if written:
            table = {k: (np.stack(v) if k != "video_id" else np.array(v, object)) for k, v in columns.items()}
            write_table(table, _shard_path(out, index), schema)
        state["shards"][str(index)] = {"rows": written}
        _save_state(out, state)
        summary.shards_written += 1
        summary.written += written
        bar.update(len(shard))
    bar.close()
    if summary.written == 0:
        log.warning("embed: no video got its embeddings; %s is empty (see the warnings above, or --zero-fill).",
                    out)
    return summary
