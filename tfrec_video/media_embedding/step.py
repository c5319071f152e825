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

**On a cluster.** `--runner` (`run_embed(runner=...)`) embeds the shards on an
Apache Beam pipeline (`media_embedding.beam_embed`): this machine reads the
CSV, checks the identity and the state, then each worker loads the models once
and embeds and writes whole shards, marking each one done
(`out/_embed_done/<index>.json`, `media_embedding.shards`); the markers are
folded into the state when the pipeline ends, or when the next run starts
after a killed one. The output is the same, file for file, as the in-process
run's, and each resumes the other. `--out`, the models and the media must be
paths every worker reads (`gs://...`), the workers need this package (e.g.
Dataflow's `--sdk_container_image`), and options the command does not know
are Beam pipeline options:

    tfrec-video embed --catalog gs://bucket/media.csv --image-model gs://bucket/models/mobilenet.tflite \\
        --out gs://bucket/emb.parquet --runner DataflowRunner --project=my-project --region=europe-west1 \\
        --temp_location=gs://bucket/tmp

Example:

    tfrec-video embed --catalog media.csv \\
        --image-model ../shared/pretrained/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \\
        --audio-model ../shared/pretrained/audio/yamnet_spectra_in.tflite --out emb.parquet
"""

import csv
import hashlib
import io
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from tfrec_video.data.files import detect_format, open_file
from tfrec_video.data.media_embeddings import STATE_FILE, embeddings_schema
from tfrec_video.data.tables import write_table
from tfrec_video.errors import ConfigError, DataValidationError, shorten
from tfrec_video.media_embedding.encoders import load_audio_model, load_image_model, load_text_model
from tfrec_video.media_embedding.shards import (MARKERS, EmbedSummary, embed_shard, exists, extension, isdir,
                                                listdir, makedirs, read_json, read_markers, remove_markers,
                                                remove_rows_files, shard_path, write_json)
from tfrec_video.media_embedding.titles import titled_rows

log = logging.getLogger("tfrec_video.embed")
COLUMNS = ("video_id", "thumbnail_path", "audio_path")


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


def _load_state(out: str, identity: dict) -> dict:
    path = f"{out.rstrip('/')}/{STATE_FILE}"
    if not exists(path):
        if isdir(out) and [n for n in listdir(out) if not n.startswith((".", "_"))]:
            raise ConfigError(f"--out {out!r} already holds files that no embedding run wrote; choose another "
                              "--out or empty it.")
        return {"identity": identity, "shards": {}}
    state = read_json(path)
    if state.get("identity") != identity:
        changed = sorted(k for k in set(identity) | set(state.get("identity", {}))
                         if identity.get(k) != state.get("identity", {}).get(k))
        raise ConfigError(f"--out {out!r} holds shards of another embedding run ({', '.join(changed)} differ); "
                          "choose another --out, or delete it to start over.")
    return state


def _absolute(path: Optional[str]) -> Optional[str]:
    # The same file named from another directory is the same model; another file at the same relative path is not.
    if not path or "://" in path:
        return path
    return os.path.abspath(path)


def _save_state(out: str, state: dict) -> None:
    # Shards in order, whichever run (or worker) completed them first: the same state for the same output.
    state["shards"] = dict(sorted(state["shards"].items(), key=lambda item: int(item[0])))
    write_json(f"{out.rstrip('/')}/{STATE_FILE}", state)


def _fold_markers(out: str, state: dict, run: str) -> Dict[int, dict]:
    """Records in the state the shards that workers of run `run` marked complete, saves it, then removes those
    markers and any Beam rows file (a killed run's); returns the markers (`read_markers`)."""
    found = read_markers(out, run)
    state["shards"].update({str(index): {"rows": marker["rows"]} for index, marker in found.items()})
    _save_state(out, state)
    remove_markers(out, found)
    remove_rows_files(out)
    return found


def _done_rows(out: str, state: dict, index: int) -> Optional[int]:
    """The rows of shard `index` when an earlier run completed it (its file is still there), else None."""
    done = state["shards"].get(str(index))
    if done is not None and (done["rows"] == 0 or exists(shard_path(out, index))):
        return done["rows"]
    return None


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
    runner: Optional[str] = None,
    pipeline_args: Sequence[str] = (),
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
      runner: a Beam runner (`"DirectRunner"`, `"FlinkRunner"`, `"DataflowRunner"`, ...): the shards are
        embedded by a Beam pipeline (`beam_embed`) instead of in this process; None: in this process,
        unless `pipeline_args` are given (then `"DirectRunner"`).
      pipeline_args: Beam pipeline options (`--direct_num_workers=2`, `--project=...`, ...).

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
    if exists(out) and not isdir(out):
        raise ConfigError(f"--out {out!r} is a file; embed writes a directory of shards there "
                          f"(part-00000{extension(out)}, ...). Choose another --out, or remove the file.")
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
    identity = {"catalog_sha256": digest, "image_model": _absolute(image_model),
                "audio_model": _absolute(audio_model), "shard_size": shard_size, "zero_fill": bool(zero_fill),
                "image_range": list(image_range) if not isinstance(image_range, str) else image_range,
                "image_size": list(images.input_size) if images else None,
                "image_output_key": image_output_key if images else None,
                "audio_sample_rate": audio_sample_rate, "audio_frame_samples": audio.input_size if audio else None,
                "audio_output_key": audio_output_key if audio else None, "format": fmt}
    # A `.tflite` audio model adds the tensor it reads and its log-mel front end (audio_output_tensor,
    # audio_front_end); absent for other models, so their earlier runs still resume.
    identity.update({f"audio_{k}": v for k, v in (audio.state_options() if audio else {}).items()})
    if text:  # absent without a text model, so that earlier runs still resume
        identity.update(text_model=_absolute(text_model), titles_sha256=titles_digest)
    state = _load_state(out, identity)
    makedirs(out)
    # Saved before the first shard (here, with the markers of a killed Beam run folded in): a run killed right
    # after renaming shard 0 into place must still resume, not find a directory of shards that "no embedding run
    # wrote".
    run = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    _fold_markers(out, state, run)
    summary = EmbedSummary(out=out, videos=len(rows), image_dim=images.output_dim if images else None,
                           audio_dim=audio.output_dim if audio else None, title_dim=text.output_dim if text else None)
    # attach_embeddings reads the widths from here.
    dims = {"image_embedding": summary.image_dim, "audio_embedding": summary.audio_dim,
            "title_embedding": summary.title_dim}
    state["widths"] = dict(dims)
    if runner or pipeline_args:
        # The workers load the models themselves, from the same handles (absolute: their working directory
        # may differ) and options.
        loaders = {"image_embedding": (_absolute(image_model), image_size, image_range, image_output_key),
                   "audio_embedding": (_absolute(audio_model), audio_sample_rate, audio_clip_seconds,
                                       audio_output_key, audio_output_tensor),
                   "title_embedding": (_absolute(text_model),)}
        loaders = {name: args for name, args in loaders.items() if args[0]}
        _run_on_beam(rows, out, state, run, summary, dims, loaders, batch_size, shard_size, audio_sample_rate,
                     zero_fill, [f"--runner={runner or 'DirectRunner'}", *pipeline_args])
    else:
        models = {"image_embedding": images, "audio_embedding": audio, "title_embedding": text}
        _run_in_process(rows, out, state, summary, dims, models, batch_size, shard_size, audio_sample_rate,
                        zero_fill, progress)
    if summary.written == 0:
        log.warning("embed: no video got its embeddings; %s is empty (see the warnings above, or --zero-fill).",
                    out)
    return summary


def _run_in_process(rows, out, state, summary, dims, models, batch_size, shard_size, audio_sample_rate, zero_fill,
                    progress) -> None:
    """Embeds and writes the shards one after the other, recording each in the state as it is written."""
    from tqdm.auto import tqdm

    schema = embeddings_schema(*dims.values())
    bar = tqdm(total=len(rows), unit="video", desc="embed", disable=not progress)
    for index, start in enumerate(range(0, len(rows), shard_size)):
        shard = rows[start:start + shard_size]
        done = _done_rows(out, state, index)
        if done is not None:
            summary.shards_skipped += 1
            summary.written += done
            bar.update(len(shard))
            continue
        table = embed_shard(shard, models, batch_size, audio_sample_rate, zero_fill, summary)
        written = 0 if table is None else len(table["video_id"])
        if written:
            write_table(table, shard_path(out, index), schema)
        state["shards"][str(index)] = {"rows": written}
        _save_state(out, state)
        summary.shards_written += 1
        summary.written += written
        bar.update(len(shard))
    bar.close()


def _run_on_beam(rows, out, state, run, summary, dims, loaders, batch_size, shard_size, audio_sample_rate, zero_fill,
                 pipeline_args) -> None:
    """Embeds the shards not yet complete on a Beam pipeline, then folds its workers' markers into the state."""
    from tfrec_video.media_embedding import beam_embed  # Beam only when asked: `import tfrec_video` stays light

    pending = []
    for index in range(-(-len(rows) // shard_size)):
        done = _done_rows(out, state, index)
        if done is None:
            pending.append(index)
        else:
            summary.shards_skipped += 1
            summary.written += done
    _save_state(out, state)  # with the widths
    if pending:
        log.info("embed: %d shards to embed on %s", len(pending), pipeline_args[0])
        # Media paths (and out) made absolute, for workers in another directory.
        shards = ((index, [{k: _absolute(v) if k in COLUMNS[1:] else v for k, v in row.items()}
                           for row in rows[index * shard_size:(index + 1) * shard_size]]) for index in pending)
        beam_embed.embed_shards(shards, _absolute(out), loaders, dims, batch_size, audio_sample_rate, zero_fill, run,
                                pipeline_args)
    found = _fold_markers(out, state, run)
    missing = [index for index in pending if index not in found]
    if missing:
        raise ConfigError(f"embed: the pipeline ended, but {len(missing)} shards (part-{missing[0]:05d}, ...) are not "
                          f"marked complete in {out}/{MARKERS}: the workers must write to the --out this machine "
                          "reads (a local --out suits DirectRunner; on a cluster, a path every worker and this "
                          "machine share, such as gs://...). Run again to resume.")
    for index in pending:
        summary.shards_written += 1
        summary.written += found[index]["rows"]
        summary.add_counts(found[index]["counts"])
