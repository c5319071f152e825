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
   with its own signatures, as the next version, atomically, with warmup
   records (`serving.versions`, `serving.warmup`) and
   `assets.extra/catalog_refresh.json` (`REFRESH_FILE`: the version it came
   from and the counts of added, changed, removed and kept videos).

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
    # saved_models/video_rec/8, from version 7
"""

import json
import os
import shutil
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import follow_umask
from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.errors import ConfigError, DataValidationError, first_line
from tfrec_video.serving.versions import latest_version, make_temp_dir, next_version, publish, remove_stale_temp_dirs
from tfrec_video.serving.warmup import refreshed_warmup_requests, write_warmup_requests
from tfrec_video.towers.catalog_table import CatalogTable

REFRESH_FILE = os.path.join("assets.extra", "catalog_refresh.json")
# The function every export (`ServingModule`) holds for this, beside its signatures.
ENCODE_FUNCTION = "encode_catalog_rows"
# Rows compared or encoded at a time: a million-video catalog is never copied out whole per column.
CHUNK = 1 << 16


def latest_video_inputs(model_dir: str) -> Dict[str, tf.TensorSpec]:
    """`{name: spec}` of the video columns the latest version of `model_dir` reads (its `embed_video` inputs,
    the same as `encode_catalog_rows`'), read from `saved_model.pb` alone: no variable is restored, so a
    caller can read the catalog files with the right widths before the (slower) load.

    Raises:
      ConfigError: no version, or one without an `embed_video` signature.
    """
    return _video_inputs(_latest(model_dir))


def _video_inputs(version_dir: str) -> Dict[str, tf.TensorSpec]:
    """`latest_video_inputs` of one version directory."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(version_dir, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved.ParseFromString(f.read())
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


def _checked_catalog(catalog: Mapping[str, np.ndarray], specs: Mapping[str, tf.TensorSpec],
                     source: str) -> Dict[str, tf.Tensor]:
    """The columns the export reads, as tensors of its dtypes, after checking them (uniqueness aside:
    `_check_unique` does it with the ids' fingerprints, computed anyway)."""
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
        try:  # tensors from here on: a million strings are compared and gathered in TF, not in Python
            columns[name] = tf.convert_to_tensor(column if strings else column.astype(spec.dtype.as_numpy_dtype),
                                                 spec.dtype)
        except (TypeError, ValueError, tf.errors.OpError) as error:  # e.g. None among the strings
            raise DataValidationError(f"holds values that are not {spec.dtype.name}: {first_line(error)}",
                                      file=source, feature=name, expected="strings" if strings else "numbers") from None
    empty = tf.where(tf.equal(columns["video_id"], ""))
    if int(tf.size(empty)):
        # "" is the padding id: a video under it could never be looked up.
        raise DataValidationError("empty video_id", file=source, row=int(empty[0, 0]), feature="video_id",
                                  expected="a non-empty id")
    return columns


def _check_unique(ids: tf.Tensor, fingerprints: np.ndarray, source: str) -> None:
    """Raises `DataValidationError` naming a repeated id; the exact check runs only when two of the sorted
    `fingerprints` are equal (a repeat, or, rarely, two ids of one fingerprint)."""
    if len(fingerprints) > 1 and np.any(fingerprints[1:] == fingerprints[:-1]):
        check_unique_ids(ids.numpy(), [(source, int(tf.size(ids)))], "video_id")


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
    # Each variable read once as a value, and gathered from that: no copy of a million rows per gather.
    fingerprints = tf.convert_to_tensor(table.fingerprints)
    wanted = CatalogTable._fingerprint(ids)
    position = tf.minimum(tf.searchsorted(fingerprints, wanted), tf.size(fingerprints) - 1)
    table_rows = tf.gather(tf.convert_to_tensor(table.fingerprint_rows), position)
    # A fingerprint match is confirmed by the stored id, as `CatalogTable.lookup` does.
    found = tf.equal(tf.gather(fingerprints, position), wanted) & tf.equal(
        tf.gather(tf.convert_to_tensor(table.ids), table_rows), ids)
    same = found
    for name in content:
        equal = tf.equal(_bits(tf.gather(tf.convert_to_tensor(table.values[name]), table_rows)), _bits(columns[name]))
        same &= tf.reduce_all(tf.reshape(equal, [tf.shape(equal)[0], -1]), axis=1)
    return {"old_rows": tf.where(found, table_rows - 1, tf.constant(-1, table_rows.dtype)).numpy(),
            "encode": tf.logical_not(same).numpy()}


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
                    source: str = "the catalog") -> str:
    """Writes the next version of `export_dir`, serving `catalog` with the latest version's weights.

    Args:
      export_dir: a model directory written by `export_saved_model` (`saved_models/<name>`); its
        highest numbered version holding a SavedModel is refreshed.
      catalog: the new catalog as column arrays (`load_catalog`'s output): every video it holds can
        be recommended, and no other.
      batch_size: videos encoded per call of the export's `encode_catalog_rows`.
      source: what `catalog` was read from, for error messages (the CLI passes its globs).

    Returns:
      The new version directory (`export_dir/<latest + 1>`, or the next free number when another
      writer took that one meanwhile).

    Raises:
      ConfigError: `export_dir` holds no version, the version does not load, or it predates
        `encode_catalog_rows` (export the model again).
      DataValidationError: the catalog is empty, lacks a column the export reads, has a column of the
        wrong width or dtype, or holds an id twice or an empty id; nothing is written.
    """
    model_dir = os.path.normpath(os.fspath(export_dir))
    previous_dir = _latest(model_dir)
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
    counts = {"from_version": int(os.path.basename(previous_dir)), "videos": len(old_rows),
              "added": int((old_rows < 0).sum()), "changed": int((encode & (old_rows >= 0)).sum()),
              "kept": int((~encode).sum()), "removed": stored - int((old_rows >= 0).sum())}
    return _write(loaded, model_dir, previous_dir, counts)


def _write(loaded, model_dir: str, previous_dir: str, counts: Dict[str, int]) -> str:
    """Saves the refreshed `loaded` as the next version of `model_dir`, as `export_saved_model` writes one:
    in a temporary directory renamed into place, warmup records and the umask's modes included."""
    remove_stale_temp_dirs(model_dir)
    version = next_version(model_dir)
    tmp = make_temp_dir(model_dir, version)
    try:
        signatures = dict(loaded.signatures)
        tf.saved_model.save(loaded, tmp, signatures=signatures)
        write_warmup_requests(tmp, refreshed_warmup_requests(signatures, loaded.catalog, os.path.basename(model_dir),
                                                             previous_dir))
        with open(os.path.join(tmp, REFRESH_FILE), "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=1, sort_keys=True)
        follow_umask(tmp)
        return publish(tmp, model_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
