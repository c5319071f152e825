"""The embedding step's output table, and joining it into the catalog by `video_id`.

`tfrec-video embed` (`tfrec_video.media_embedding`) writes a table of
`video_id` plus `image_embedding`, `audio_embedding` and/or `title_embedding`
vectors (`embeddings_schema`). `attach_embeddings` reads such a table (any
format, file, directory or glob) and adds its vectors to the catalog's columns,
so the model trains on them as if the catalog had carried them all along; this
is what `data.embeddings` in a `tfrec-video train` config does. `read_titles`
reads the titles the embedding step embeds from a catalog table.

Example:

>>> import numpy as np, os, tempfile
>>> from tfrec_video.data import write_table
>>> out = os.path.join(tempfile.mkdtemp(), "emb.parquet")
>>> _ = write_table({"video_id": ["a", "b"], "image_embedding": np.eye(2, 3, dtype=np.float32)}, out,
...                 embeddings_schema(image_dim=3))
>>> catalog = {"video_id": np.array(["b", "a"], object), "title": np.array(["x", "y"], object)}
>>> attach_embeddings(catalog, out, image_dim=3)["image_embedding"].tolist()
[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
"""

import json
import logging
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from tfrec_video.data.files import files_format, is_local, list_files
from tfrec_video.data.schema import Feature, TableSchema, as_strings
from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.data.tables import _module as format_module, _to_str, read_table_numpy_with_files, table_columns
from tfrec_video.errors import DataValidationError

log = logging.getLogger(__name__)
# Written by the embedding step in its output directory; it records the widths.
STATE_FILE = "_embed_state.json"
MISSING = ("error", "zeros")
EMBEDDINGS = ("image_embedding", "audio_embedding", "title_embedding")


def embeddings_schema(image_dim: Optional[int] = None, audio_dim: Optional[int] = None,
                      title_embedding_dim: Optional[int] = None) -> TableSchema:
    """The embedding table: `video_id` and the embeddings of the modalities with a width.

    Raises:
      ValueError: no width is given, or one is not a positive integer.
    """
    features = [Feature("video_id", "string", required=True, role="id", description="the catalog's video id",
                        non_empty=True)]
    for name, dim in zip(EMBEDDINGS, (image_dim, audio_dim, title_embedding_dim)):
        if dim is None:
            continue
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"embeddings_schema: the width of {name} must be a positive integer, got {dim!r}.")
        features.append(Feature(name, "float32", "vector", dim, required=True, role="content",
                                description=f"pretrained {name.split('_')[0]} embedding"))
    if len(features) == 1:
        raise ValueError("embeddings_schema: give image_dim, audio_dim, title_embedding_dim or several.")
    return TableSchema("embeddings", tuple(features))


def _recorded_widths(files: Sequence[str]) -> Dict[str, int]:
    """The widths the embedding step recorded beside `files` (its output directory, named as a directory, a glob
    of its shards or a list of them); empty when no file lies in such a directory."""
    widths: Dict[str, int] = {}
    for directory in sorted({os.path.dirname(f) for f in files if is_local(f)}):
        path = os.path.join(directory, STATE_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f).get("widths", {})
            widths.update({name: int(dim) for name, dim in recorded.items() if dim})
    return widths


def attach_embeddings(catalog: Mapping[str, np.ndarray], paths, image_dim: Optional[int] = None,
                      audio_dim: Optional[int] = None, missing: str = "error",
                      title_embedding_dim: Optional[int] = None) -> Dict[str, np.ndarray]:
    """The catalog with the embedding table's vectors joined in by `video_id`.

    Args:
      catalog: the catalog as column arrays (from `load_catalog`).
      paths: the embedding table (file, directory, glob or list; any format).
      image_dim: the width of `image_embedding` in the files. An embedding
        step's output directory records its widths, which then win (also when
        `paths` is a glob or list of its shards).
      audio_dim: the same for `audio_embedding`.
      title_embedding_dim: the same for `title_embedding`.
      missing: what a catalog video without a row in the table gets: `"error"`
        (a `DataValidationError` naming the videos) or `"zeros"` (a zero
        vector, logged with the count).

    Returns:
      A new dict: the catalog's columns plus (replacing any already there)
      `image_embedding` / `audio_embedding` / `title_embedding` `[videos, dim]`
      float32, in catalog order.

    Raises:
      DataValidationError: an unreadable table, a wrong width, a non-finite
        value (all named by file, row and feature), a duplicate id, or (with
        `missing="error"`) catalog videos the table lacks.
    """
    if missing not in MISSING:
        raise ValueError(f"attach_embeddings: missing must be one of {MISSING}, got {missing!r}.")
    files = list_files(paths)
    widths = {"image_embedding": image_dim, "audio_embedding": audio_dim, "title_embedding": title_embedding_dim,
              **_recorded_widths(files)}
    names = [n for n in EMBEDDINGS if n in table_columns(files)]
    if not names:
        raise DataValidationError("the table has no image_embedding, audio_embedding or title_embedding column",
                                  file=files[0], expected="the output of tfrec-video embed")
    for name in names:
        if not widths.get(name):
            raise DataValidationError("its width is not known", file=files[0], feature=name,
                                      expected="image_dim / audio_dim / title_embedding_dim (data.image_dim, "
                                               "data.audio_dim, data.title_embedding_dim in a config)")
    schema = embeddings_schema(*(widths[n] if n in names else None for n in EMBEDDINGS))
    table, file_rows = read_table_numpy_with_files(files, schema, validate=True)
    # A duplicate id is named by the file and row (line, for CSV) of both of its rows.
    check_unique_ids(table["video_id"], file_rows, "video_id")
    ids = as_strings(table["video_id"])
    row_of: Dict[str, int] = {video_id: row for row, video_id in enumerate(ids.tolist())}
    catalog_ids = as_strings(catalog["video_id"])
    rows = np.array([row_of.get(v, -1) for v in catalog_ids])
    absent = catalog_ids[rows < 0]
    if len(absent) and missing == "error":
        raise DataValidationError(
            f"{len(absent)} of the catalog's {len(catalog_ids)} videos have no row, e.g. {absent[:5].tolist()}",
            file=str(paths), feature="video_id",
            expected="a row for every catalog video (run tfrec-video embed with --zero-fill, or pass missing='zeros')")
    if len(absent):
        log.warning("attach_embeddings: %d catalog videos have no embedding in %s; they get zero vectors.",
                    len(absent), paths)
    out = dict(catalog)
    for name in names:
        values = np.zeros((len(catalog_ids), widths[name]), np.float32)
        values[rows >= 0] = table[name][rows[rows >= 0]]
        out[name] = values
    return out


def read_titles(paths) -> Dict[str, str]:
    """The `video_id` -> `title` of a catalog table (any format; file, directory, glob or list).

    Only the two columns are read: the table may hold any other catalog column
    (embeddings of any width, media bytes), which is neither read nor checked.

    Raises:
      DataValidationError: a missing file or column, an empty or duplicate
        `video_id` (named by file and row, or line for CSV), or no rows.
    """
    schema = TableSchema("titles", (
        Feature("video_id", "string", required=True, role="id", description="the catalog's video id", non_empty=True),
        Feature("title", "string", required=True, role="content", description="free text, any language")))
    files = list_files(paths)
    module = format_module(files_format(files, None))
    parts: Dict[str, list] = {"video_id": [], "title": []}
    file_rows = []
    for path in files:
        columns = module.read_columns(path)
        for name in schema.names:
            if name not in columns:
                raise DataValidationError(f"the table has no {name} column (it has {sorted(columns)})", file=path,
                                          feature=name, expected="a catalog table with video_id and title columns")
        rows = 0
        for offset, batch in module.iter_batches(path, schema, validate=True, dense=True):
            for feature in schema:
                parts[feature.name].append(_to_str(np.asarray(batch[feature.name]), path, feature, offset))
            rows += len(batch["video_id"])
        file_rows.append((path, rows))
    ids = np.concatenate(parts["video_id"]) if parts["video_id"] else np.zeros(0, object)
    if not len(ids):
        raise DataValidationError("the table has no rows", file=files[0], expected="one row per video")
    check_unique_ids(ids, file_rows, "video_id")
    return dict(zip(ids.tolist(), np.concatenate(parts["title"]).tolist()))
