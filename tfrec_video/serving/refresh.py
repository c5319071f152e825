"""`refresh_catalog`: the next version of an export, serving a new catalog with the same weights.

A catalog changes every day (videos uploaded, retitled, taken down); the model
is retrained far less often. `tfrec-video export --model M --catalog NEW`
serves a new catalog, but it needs the training-side model directory and
encodes every video again (a tokenizer and CNN pass per video: minutes at a
million videos). `refresh_catalog` needs the export alone and encodes only what
changed:

1. The latest version of `saved_models/<name>/` is loaded with
   `tf.saved_model.load`: its signatures and weights, and the catalog it holds
   as variables (`ServingModule`): the catalog table (ids, their sorted
   fingerprints, content columns and, when it is the model's own table, the
   prepared `title_tokens` / `*_components`), the retrieval index
   (`catalog_embedding`) and the ranking head's per-video parts
   (`catalog_encoding`, `catalog_parts`).
2. The new catalog is checked against what the export reads (the input specs
   of its `encode_catalog_rows` function): every column present with its
   dtype and width, at least one video, each id once.
3. Each new video is found among the stored ones by id (the table's own
   fingerprint search, confirmed by the stored id), and a found one is
   *changed* when any content column differs from the stored one (bit for
   bit; the content columns are what the encodings are computed from, with
   the id). The stored content columns are the record: no extra state.
4. Added and changed videos, and only those, go through the export's
   `encode_catalog_rows` (`ServingModule._encode_catalog_rows`: the index row,
   the ranking parts and the prepared columns, from raw columns, in the graph);
   kept videos' rows are copied bit for bit; removed videos are dropped.
5. The variables are assigned the new rows (their row dimension is unknown:
   `towers.catalog_table.rows_variable`) and the loaded object is saved again
   with its own signatures, as version N + 1 of version N, atomically, with
   warmup records (`serving.versions`, `serving.warmup`) and
   `assets.extra/catalog_refresh.json` (`REFRESH_FILE`: the version it came
   from and the counts of added, changed, removed and kept videos).

The number is fixed: N + 1, never the next free one. A `tfrec-video export` of
retrained weights that publishes N + 1 while the refresh runs would otherwise
be followed by the refresh as N + 2, and TF Serving serves the highest version:
the old weights would silently replace the new ones. The refresh fails instead
(`ConfigError`, nothing written; run it again to refresh the new version).

The result serves what `export --catalog NEW` of the same model serves (to
float rounding): same index, same ranking inputs, same `k` and `n` (a catalog
smaller than `k` returns all of its videos). One difference is by design: an
export of the model's own training catalog shares one table between the
served catalog and the lookup of watched videos (`ServingModule`), so after a
refresh the watched videos are looked up in the new catalog too: an added
video that a user watched is embedded from its content (a full export of NEW
embeds it from its id alone), a removed one from its id alone. An export of
another catalog keeps the model's table for watched videos, and its refresh
serves exactly what the full export does.

Example:

    version_dir = refresh_catalog("saved_models/video_rec", load_catalog("data/catalog_today/*.parquet", schema))
    # saved_models/video_rec/8, from version 7 (its assets.extra/catalog_refresh.json: what changed)
"""

import json
import os
import shutil
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from tfrec_video.data.files import follow_umask
from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.data.schema import Feature
from tfrec_video.data.validation import check_values
from tfrec_video.errors import ConfigError, DataValidationError, first_line
from tfrec_video.serving.versions import latest_version, make_temp_dir, newer_versions, publish, remove_stale_temp_dirs
from tfrec_video.serving.warmup import refreshed_warmup_requests, write_warmup_requests
from tfrec_video.towers.catalog_table import CatalogTable

REFRESH_FILE = os.path.join("assets.extra", "catalog_refresh.json")
# The function every export (`ServingModule`) holds for this, beside its signatures.
ENCODE_FUNCTION = "encode_catalog_rows"
# Rows `catalog_diff` compares at a time: a stored content column is gathered into the new catalog's order
# CHUNK rows at a time, not whole (a million 1024-float image embeddings would be one more 4 GB copy).
CHUNK = 1 << 16
# `refresh_catalog`'s `source` when the caller names none.
DEFAULT_SOURCE = "the catalog"


def latest_export_version(model_dir: str) -> int:
    """The latest version of `model_dir` holding a SavedModel: the one `refresh_catalog` refreshes.

    A caller that reads something of that version first (the CLI: `latest_video_inputs`, for the catalog's
    widths) resolves it once, here, and passes it to both, so that both read the same version.

    Raises:
      ConfigError: `model_dir` holds no such version (with a hint when it is a version itself).
    """
    return int(os.path.basename(_latest(model_dir)))


def latest_video_inputs(model_dir: str, version: Optional[int] = None) -> Dict[str, tf.TensorSpec]:
    """`{name: spec}` of the video columns a version of `model_dir` reads (its `embed_video` inputs,
    the same as `encode_catalog_rows`'), read from `saved_model.pb` alone: no variable is restored, so a
    caller can read the catalog files with the right widths before the (slower) load.

    Args:
      model_dir: a model directory written by `export_saved_model` (`saved_models/<name>`).
      version: the version to read (`latest_export_version`); default the latest.

    Raises:
      ConfigError: no version (or `version` holds no SavedModel), one without an `embed_video`
        signature, or an unreadable `saved_model.pb`.
    """
    return _video_inputs(_latest(model_dir) if version is None else _version_dir(model_dir, version))


def _video_inputs(version_dir: str) -> Dict[str, tf.TensorSpec]:
    """`latest_video_inputs` of one version directory."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(version_dir, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            saved.ParseFromString(f.read())
    except (DecodeError, OSError, tf.errors.OpError) as error:  # truncated or overwritten: protobuf's error alone
        # names neither the file nor what to do.
        raise ConfigError(f"{path}: not a readable SavedModel: {first_line(error)} (a truncated or damaged copy? "
                          "export the model again, or refresh another version).") from None
    for meta_graph in saved.meta_graphs:
        if "embed_video" in meta_graph.signature_def:
            inputs = meta_graph.signature_def["embed_video"].inputs
            return {name: tf.TensorSpec([None if d.size < 0 else d.size for d in info.tensor_shape.dim],
                                        tf.dtypes.as_dtype(info.dtype), name=name)
                    for name, info in inputs.items()}
    raise ConfigError(f"{path}: no embed_video signature: not an export of tfrec-video export.")


def _latest(model_dir: str) -> str:
    """The directory of the latest version in `model_dir` (`versions.latest_version`)."""
    version = latest_version(model_dir)
    if version is None:
        hint = ""
        if tf.saved_model.contains_saved_model(model_dir):
            hint = f"; it is a version itself: pass its parent, {os.path.dirname(os.path.abspath(model_dir))}"
        raise ConfigError(f"{model_dir}: no exported version to refresh (expected a model directory written by "
                          f"tfrec-video export, such as saved_models/video_rec, holding numbered versions){hint}.")
    return os.path.join(model_dir, str(version))


def _version_dir(model_dir: str, version: int) -> str:
    """The directory of version `version` of `model_dir`, checked to hold a SavedModel."""
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ConfigError(f"version: expected a version number (an int >= 1), got {version!r}.")
    path = os.path.join(model_dir, str(int(version)))
    if not tf.saved_model.contains_saved_model(path):
        raise ConfigError(f"{path}: no exported version to refresh (expected a version directory written by "
                          "tfrec-video export, holding saved_model.pb).")
    return path


def _load(version_dir: str):
    """The loaded export of `version_dir`, checked to hold what a refresh needs."""
    import tensorflow_text  # noqa: F401  (registers the WordPiece ops the title encoder uses)

    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as error:  # a corrupt or foreign SavedModel: say which, in one line
        raise ConfigError(f"{version_dir}: the SavedModel does not load: {first_line(error)}") from None
    if not hasattr(loaded, ENCODE_FUNCTION) or not hasattr(loaded, "catalog_embedding"):
        raise ConfigError(f"{version_dir}: the export has no {ENCODE_FUNCTION} function (it was written by an older "
                          "tfrec_video, or not by tfrec-video export): export the model again with tfrec-video "
                          "export, then refresh that.")
    return loaded


def _rows_of(source: str) -> str:
    """The `file` of an error naming a row of the catalog as passed: its files' rows one after another (the
    caller's `load_catalog` stacked them), so the row is one of the whole catalog, not of one file."""
    return source if source == DEFAULT_SOURCE else f"the catalog read from {source} (rows counted across its files)"


def _check_finite(name: str, column: np.ndarray, source: str) -> None:
    """Raises `DataValidationError` naming the first row of float `column` holding a NaN or an infinity
    (`data.validation.check_values`, which the catalog files' reader runs too): a NaN image embedding
    would make a NaN index row, and a NaN score for every user."""
    if not column.size:
        return
    if column.ndim == 1:
        feature, lengths = Feature(name, "float32"), None
    else:  # one row per video, its values flat: `check_values` maps a value back to its row
        width = int(np.prod(column.shape[1:]))
        feature, lengths = Feature(name, "float32", kind="vector", length=width), np.full(len(column), width)
    check_values(feature, (column.reshape(-1), lengths), file=_rows_of(source))


def _checked_catalog(catalog: Mapping[str, np.ndarray], specs: Mapping[str, tf.TensorSpec],
                     source: str) -> Dict[str, tf.Tensor]:
    """The columns the export reads, as tensors of its dtypes, after checking them (uniqueness aside:
    `_check_unique` does it with the ids' fingerprints, computed anyway). A row an error names is one of
    `catalog` as passed (`_rows_of`)."""
    reads = sorted(specs)
    if "video_id" not in catalog:
        raise DataValidationError("missing column", file=source, feature="video_id",
                                  expected=f"a catalog with the columns the export reads: {reads}")
    ids = np.asarray(catalog["video_id"])
    if ids.ndim != 1 or len(ids) == 0:
        raise DataValidationError(f"{'no videos' if ids.size == 0 else f'shape {list(ids.shape)}'}", file=source,
                                  feature="video_id", expected="at least one video, one id per row")
    columns = {}
    for name in reads:
        spec = specs[name]
        if name not in catalog:
            raise DataValidationError("missing column: the exported model reads it", file=source, feature=name,
                                      expected=f"a catalog with the columns the export reads: {reads}")
        column = np.asarray(catalog[name])
        wanted = [len(ids)] + [int(d) for d in spec.shape[1:]]
        if list(column.shape) != wanted:
            width = (f"{wanted[1]} values per video (the exported model's width)" if len(wanted) > 1
                     else "one value per video")
            raise DataValidationError(f"has shape {list(column.shape)}", file=source, feature=name,
                                      expected=f"shape {wanted}: {width}")
        strings = spec.dtype == tf.string
        if column.dtype.kind not in ("OSU" if strings else "biuf"):
            raise DataValidationError(f"holds {column.dtype} values", file=source, feature=name,
                                      expected="strings" if strings else f"{spec.dtype.name} numbers")
        if not strings:
            with np.errstate(over="ignore"):  # an overflow becomes an infinity, refused next with its row
                column = column.astype(spec.dtype.as_numpy_dtype, copy=False)
            if spec.dtype.is_floating:  # after the cast: a float64 1e300 is an infinity in float32
                _check_finite(name, column, source)
        try:  # tensors from here on: a million strings are compared and gathered in TF, not in Python
            columns[name] = tf.convert_to_tensor(column, spec.dtype)
        except (TypeError, ValueError, tf.errors.OpError) as error:  # e.g. None among the strings
            raise DataValidationError(f"holds values that are not {spec.dtype.name}: {first_line(error)}",
                                      file=source, feature=name, expected="strings" if strings else "numbers") from None
    empty = tf.where(tf.equal(columns["video_id"], ""))
    if int(tf.size(empty)):
        # "" is the padding id: a video under it could never be looked up.
        raise DataValidationError("empty video_id", file=_rows_of(source), row=int(empty[0, 0]), feature="video_id",
                                  expected="a non-empty id")
    return columns


def _check_unique(ids: tf.Tensor, fingerprints: np.ndarray, source: str) -> None:
    """Raises `DataValidationError` naming a repeated id; the exact check runs only when two of the sorted
    `fingerprints` are equal (a repeat, or, rarely, two ids of one fingerprint)."""
    if len(fingerprints) > 1 and np.any(fingerprints[1:] == fingerprints[:-1]):
        check_unique_ids(ids.numpy(), [(_rows_of(source), int(tf.size(ids)))], "video_id")


def _bits(values: tf.Tensor) -> tf.Tensor:
    """Floats as same-width integers, so that equality is bitwise (NaN equals itself, -0.0 differs from 0.0)."""
    if not values.dtype.is_floating:
        return values
    return tf.bitcast(values, {2: tf.int16, 4: tf.int32, 8: tf.int64}[values.dtype.size])


def catalog_diff(table, columns: Mapping[str, tf.Tensor], content: list) -> Dict[str, np.ndarray]:
    """How the new catalog's videos relate to those a catalog table holds.

    Args:
      table: the export's catalog table (`ids`, `fingerprints`, `fingerprint_rows`, `values` variables).
      columns: the new catalog (`_checked_catalog`'s output).
      content: the content columns the encodings are computed from (`video_id` aside).

    Returns:
      `old_rows`: for each new video, its row in the table's catalog (table row - 1), or -1 when it
      is not there; `encode`: whether it must be encoded (added, or any content column changed).
    """
    ids = columns["video_id"]
    # Each variable read once as a value; the stored columns are gathered from it in CHUNK-row pieces, so a
    # stored column is never gathered whole into the new order, and a piece is reduced to one bool per video.
    rows = CatalogTable.find_rows(*(tf.convert_to_tensor(v) for v in (table.fingerprints, table.fingerprint_rows,
                                                                       table.ids)), ids).numpy()
    stored = {name: tf.convert_to_tensor(table.values[name]) for name in content}
    found = rows > 0
    same = found.copy()
    for start in range(0, len(rows), CHUNK):
        piece = rows[start:start + CHUNK]
        for name in content:
            equal = tf.equal(_bits(tf.gather(stored[name], piece)), _bits(columns[name][start:start + CHUNK]))
            same[start:start + CHUNK] &= tf.reduce_all(tf.reshape(equal, [tf.shape(equal)[0], -1]), axis=1).numpy()
    return {"old_rows": np.where(found, rows - 1, -1).astype(rows.dtype), "encode": ~same}


def _encode_batch(function, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """One call of the export's `encode_catalog_rows` (a seam the tests count rows through)."""
    return function(features)


def _encode(function, columns: Mapping[str, tf.Tensor], rows: np.ndarray, batch_size: int) -> Dict[str, tf.Tensor]:
    """`encode_catalog_rows` of the catalog rows `rows`, in batches of `batch_size`."""
    names = list(function.input_signature[0])
    chunks: Dict[str, list] = {}
    for start in range(0, len(rows), batch_size):
        picked = rows[start:start + batch_size]
        for name, value in _encode_batch(function, {name: tf.gather(columns[name], picked) for name in names}).items():
            chunks.setdefault(name, []).append(value)
    return {name: tf.concat(values, axis=0) for name, values in chunks.items()}


def _merged(stored: tf.Variable, index: np.ndarray, encoded: Optional[tf.Tensor]) -> tf.Tensor:
    """The new value of a per-video variable: row i is row `index[i]` of its stored rows followed by
    the `encoded` ones (`_merge_index`), gathered in one op."""
    value = tf.convert_to_tensor(stored)
    return tf.gather(value if encoded is None else tf.concat([value, tf.cast(encoded, value.dtype)], 0), index)


def _merge_index(old_rows: np.ndarray, encode: np.ndarray, stored_rows: int, offset: int) -> np.ndarray:
    """`_merged`'s index: a kept video's stored row (+ `offset`), an encoded one's row after the `stored_rows`;
    `offset` 1 also keeps the table's row 0 (the unknown video) in front."""
    index = old_rows + offset
    index[encode] = stored_rows + np.arange(int(encode.sum()))
    return np.concatenate([[0], index]) if offset else index


def refresh_catalog(export_dir: str, catalog: Mapping[str, np.ndarray], batch_size: int = 4096,
                    source: str = DEFAULT_SOURCE, from_version: Optional[int] = None) -> str:
    """Writes version N + 1 of `export_dir`, serving `catalog` with the weights of its latest version N.

    Args:
      export_dir: a model directory written by `export_saved_model` (`saved_models/<name>`); its
        highest numbered version holding a SavedModel is refreshed.
      catalog: the new catalog as column arrays (`load_catalog`'s output): every video it holds can
        be recommended, and no other.
      batch_size: videos encoded per call of the export's `encode_catalog_rows` (an int >= 1).
      source: what `catalog` was read from, for error messages (the CLI passes its globs).
      from_version: N, when the caller resolved it already (`latest_export_version`: the CLI reads the
        catalog with that version's widths first); default the latest. It must still be the latest.

    Returns:
      The new version directory, `export_dir/<N + 1>` (one past any numbered directories above N that
      hold no SavedModel); its `REFRESH_FILE` holds what changed.

    Raises:
      ConfigError: a bad `batch_size`; `export_dir` holds no version, the version does not load, or it
        predates `encode_catalog_rows` (export the model again); or a newer version than N was published
        in `export_dir` (before or while refreshing: a concurrent `tfrec-video export`), which the refresh
        of N's weights must not follow: nothing is written, and a second run refreshes the newer version.
      DataValidationError: the catalog is empty, lacks a column the export reads, has a column of the
        wrong width or dtype, holds an id twice, an empty id or a NaN or infinite number; nothing is written.
    """
    # Checked first: 0 would fail deep in the encoding loop, a negative size would encode nothing.
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size: expected an int >= 1 (videos encoded per batch), got {batch_size!r}.")
    model_dir = os.path.normpath(os.fspath(export_dir))
    previous_dir = _latest(model_dir) if from_version is None else _version_dir(model_dir, from_version)
    from_version = int(os.path.basename(previous_dir))
    # The number is fixed now (N + 1): a version published above it later is caught when publishing.
    version = _next_after(model_dir, from_version)
    # Checked against saved_model.pb before the variables are restored: a bad catalog is refused in seconds.
    columns = _checked_catalog(catalog, _video_inputs(previous_dir), source)
    ids = columns["video_id"]
    fingerprints, fingerprint_rows = CatalogTable.fingerprint_index(ids)
    _check_unique(ids, fingerprints, source)
    loaded = _load(previous_dir)
    function = getattr(loaded, ENCODE_FUNCTION)
    specs = function.input_signature[0]
    if sorted(specs) != sorted(columns):
        raise ConfigError(f"{previous_dir}: its {ENCODE_FUNCTION} reads {sorted(specs)}, its embed_video signature "
                          f"{sorted(columns)}: not an export of tfrec-video export.")
    table = loaded.catalog
    content = [name for name in sorted(specs) if name != "video_id"]
    diff = catalog_diff(table, columns, content)
    old_rows, encode = diff["old_rows"], diff["encode"]
    encoded = _encode(function, columns, np.flatnonzero(encode), batch_size) if encode.any() else {}
    # The new values of every per-video variable, computed before any is assigned.
    stored = int(tf.shape(loaded.catalog_embedding)[0])
    index = _merge_index(old_rows, encode, stored, 0)
    variables = [(loaded.catalog_embedding, "embedding"), (loaded.catalog_encoding, "encoding")]
    variables += [(variable, name) for name, variable in loaded.catalog_parts.items()]
    values = [(variable, _merged(variable, index, encoded.get(output))) for variable, output in variables]
    table_index = _merge_index(old_rows, encode, stored + 1, 1)
    for name, variable in table.values.items():
        if name in columns:  # content: the new catalog's, kept rows being equal to the stored ones
            values.append((variable, tf.concat([tf.convert_to_tensor(variable)[:1], columns[name]], 0)))
        else:  # prepared columns (tokens, projections) of the model's own table: kept or encoded
            values.append((variable, _merged(variable, table_index, encoded.get(name))))
    values += [(table.ids, tf.concat([[""], ids], 0)), (table.fingerprints, fingerprints),
               (table.fingerprint_rows, fingerprint_rows)]
    for variable, value in values:
        variable.assign(value)
    counts = {"from_version": from_version, "videos": len(old_rows),
              "added": int((old_rows < 0).sum()), "changed": int((encode & (old_rows >= 0)).sum()),
              "kept": int((~encode).sum()), "removed": stored - int((old_rows >= 0).sum())}
    return _write(loaded, model_dir, previous_dir, version, counts)


def _appeared(model_dir: str, version: int, from_version: int) -> ConfigError:
    """The error of a version `version` found in `model_dir` above the refreshed `from_version`."""
    return ConfigError(f"version {version} appeared in {model_dir} while refreshing from version {from_version} "
                       f"(a concurrent tfrec-video export?); nothing was written: a refresh of version "
                       f"{from_version}'s weights must not be served in place of it. Run refresh-catalog again "
                       f"to refresh version {version}.")


def _next_after(model_dir: str, from_version: int) -> int:
    """The version a refresh of `from_version` publishes (`versions.newer_versions`), checked that no newer
    version holding a SavedModel is there already."""
    newer, version = newer_versions(model_dir, from_version)
    if newer is not None:
        raise _appeared(model_dir, newer, from_version)
    return version


def _write(loaded, model_dir: str, previous_dir: str, version: int, counts: Dict[str, int]) -> str:
    """Saves the refreshed `loaded` as version `version` of `model_dir`, as `export_saved_model` writes one:
    in a temporary directory renamed into place, warmup records and the umask's modes included.

    The number is fixed (`publish(fixed=True)`): when another writer took it meanwhile, the temporary
    directory is removed and `ConfigError` raised; nothing published is touched."""
    remove_stale_temp_dirs(model_dir)
    tmp = make_temp_dir(model_dir, version)
    try:
        signatures = dict(loaded.signatures)
        tf.saved_model.save(loaded, tmp, signatures=signatures)
        write_warmup_requests(tmp, refreshed_warmup_requests(signatures, loaded.catalog, os.path.basename(model_dir),
                                                             previous_dir))
        with open(os.path.join(tmp, REFRESH_FILE), "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=1, sort_keys=True)
        follow_umask(tmp)
        try:
            return publish(tmp, model_dir, version, fixed=True)
        except FileExistsError:  # the next free number would serve these (older) weights above the new version
            raise _appeared(model_dir, version, counts["from_version"]) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
