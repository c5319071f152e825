"""`CatalogTable`: every catalog video's content features, looked up by id in the graph.

A watch history is a list of video ids. To pool it over what those videos *are*
(their titles, images, audio) rather than over id embeddings alone, the model
needs each catalog video's content features at query time. `CatalogTable`
holds them as non-trainable variables, and finds an id's row by binary search
over the sorted 64-bit fingerprints of the catalog ids, confirmed by comparing
the stored id (so a fingerprint collision can never return the wrong video):

    ids ──fingerprint──searchsorted──► rows ──gather──► {title, category, duration_s, image_embedding, ...}

Everything is a variable, not configuration and not a lookup-table resource:
checkpoints, `get_weights`/`set_weights` and `tf.saved_model.save` all carry
it, an exported model resolves history ids to content without the catalog
being fed to it, and `get_config` stays small (the number of rows and the
column specs). The variables' first dimension (rows) is left unknown
(`rows_variable`) and the lookup reads the row count from the values, so an
exported table can be refilled with a catalog of another size and saved again
(`tfrec-video refresh-catalog`). The ops are core TensorFlow, so TF Serving
runs them. An id that is not in the table (a video added after the table was
filled, or the padding `""`) resolves to row 0: an empty title and zero vectors.

Example:

>>> import numpy as np, tensorflow as tf
>>> table = CatalogTable(2, {"title": ("string", []), "image_embedding": ("float32", [3])})
>>> table.set_catalog({"video_id": np.array(["a", "b"], object), "title": np.array(["cat", "dog"], object),
...                    "image_embedding": np.eye(2, 3, dtype=np.float32)})
>>> out = table(tf.constant(["b", "unknown"]))
>>> out["title"].numpy().tolist(), out["image_embedding"].numpy()[:, 1].tolist()
([b'dog', b''], [1.0, 0.0])
"""

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.distribute import host_variables


def rows_variable(value, name: str) -> tf.Variable:
    """A non-trainable variable holding `value`, whose first dimension (its rows) is left unknown.

    Everything held per catalog video is one: a loaded export's variable can then be assigned a
    catalog of another number of videos and saved again (`tfrec_video.serving.refresh`), and every
    graph that reads it takes its row count from the value (`tf.shape`), never from a Python int.
    """
    value = tf.convert_to_tensor(value)
    return tf.Variable(value, trainable=False, name=name, shape=tf.TensorShape([None]).concatenate(value.shape[1:]))


class CatalogTable(tf.keras.layers.Layer):
    """Video id to content features, held in the graph (see module docstring).

    Args:
      size: number of catalog videos the table is built for (`set_catalog` fills exactly that many).
      columns: `{name: (dtype name, per-row shape)}` of the content features,
        e.g. `{"title": ("string", []), "image_embedding": ("float32", [1024])}`.
    """

    def __init__(self, size: int, columns: Mapping[str, Tuple[str, Sequence[int]]], **kwargs):
        super().__init__(trainable=False, **kwargs)
        if int(size) < 1:
            raise ValueError(f"CatalogTable {self.name}: size must be positive, got {size}.")
        self.size = int(size)
        self.columns = {str(k): (str(dtype), [int(d) for d in shape]) for k, (dtype, shape) in columns.items()}
        self.values: Dict[str, tf.Variable] = {}
        # One copy per worker, on its CPU, under tf.distribute too: never trained, filled identically on
        # every worker, and strings cannot be mirrored across workers (see host_variables).
        with host_variables():
            for name, (dtype, shape) in self.columns.items():
                # Row 0 is the "unknown video" row the lookup's default points at.
                empty = np.full([self.size + 1] + shape, "" if dtype == "string" else 0,
                                dtype=object if dtype == "string" else dtype)
                self.values[name] = rows_variable(empty, f"catalog_{name}")
            self.ids = rows_variable(np.full([self.size + 1], "", object), "catalog_video_id")
            self.fingerprints = rows_variable(np.zeros([self.size], np.int64), "id_fingerprints")
            self.fingerprint_rows = rows_variable(np.zeros([self.size], np.int64), "fingerprint_rows")

    @staticmethod
    def _fingerprint(ids):
        return tf.strings.to_hash_bucket_fast(ids, 2**63 - 1)

    def set_catalog(self, catalog: Mapping[str, np.ndarray],
                    unknown: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Fills the table from catalog column arrays (`video_id` plus every column).

        `unknown` optionally gives row 0 (what an id not in the table looks up to) of some columns, where
        an empty value is not `""` or 0, e.g. a projection of the zero vector.

        Raises:
          DataValidationError: a `video_id` appears twice (named with both rows;
            `load_catalog` names the file too).
          ValueError: a column is missing, or has the wrong number of rows or shape.
        """
        if "video_id" not in catalog:
            raise ValueError(f"CatalogTable {self.name}: the catalog has no 'video_id' column.")
        ids = np.asarray(catalog["video_id"]).astype(object).reshape(-1)
        if len(ids) != self.size:
            raise ValueError(f"CatalogTable {self.name}: expected a catalog of {self.size} videos (the one the "
                             f"model was built for), got {len(ids)}.")
        # Before anything is assigned, so that a refused catalog leaves the table as it was.
        check_unique_ids(ids, [("the catalog", len(ids))], "video_id")
        for name, (dtype, shape) in self.columns.items():
            if name not in catalog:
                raise ValueError(f"CatalogTable {self.name}: the catalog has no {name!r} column.")
            column = np.asarray(catalog[name])
            if list(column.shape) != [self.size] + shape:
                raise ValueError(f"CatalogTable {self.name}: column {name!r} has shape {list(column.shape)}, "
                                 f"expected {[self.size] + shape}.")
            empty = self.values[name][:1]
            if unknown is not None and name in unknown:
                empty = tf.constant(np.asarray(unknown[name]).astype(object if dtype == "string" else dtype)[None])
            self.values[name].assign(tf.concat([empty, tf.constant(column.astype(object) if dtype == "string"
                                                                   else column.astype(dtype))], axis=0))
        self.ids.assign(np.concatenate([[""], ids]).astype(object))
        fingerprints, rows = self.fingerprint_index(ids)
        self.fingerprints.assign(fingerprints)
        self.fingerprint_rows.assign(rows)

    @classmethod
    def fingerprint_index(cls, ids) -> Tuple[np.ndarray, np.ndarray]:
        """`(fingerprints, rows)`: the sorted 64-bit fingerprints of `ids` (a table's videos, in row order)
        and the table row of each (`i + 1` for `ids[i]`), what `fingerprints` and `fingerprint_rows` hold.
        Also what a catalog refresh (`tfrec_video.serving.refresh`) rebuilds for a new set of ids."""
        fingerprints = cls._fingerprint(tf.reshape(tf.convert_to_tensor(ids, tf.string), [-1])).numpy()
        order = np.argsort(fingerprints, kind="stable")
        return fingerprints[order], order.astype(np.int64) + 1

    def holds(self, catalog: Mapping[str, np.ndarray], chunk: int = 1 << 16,
              columns: Optional[Sequence[str]] = None) -> bool:
        """Whether the table holds exactly `catalog` (same ids in the same order, same columns and values).

        Compared in chunks of rows, so a 1M-video table is never copied out whole. `columns` limits the
        comparison to those columns (default: all), e.g. to the raw content when the others are derived
        from it.
        """
        compared = {name: self.columns[name] for name in (self.columns if columns is None else columns)}
        if "video_id" not in catalog or len(catalog["video_id"]) != self.size:
            return False
        if any(name not in catalog or list(np.shape(catalog[name])) != [self.size] + shape
               for name, (_, shape) in compared.items()):
            return False
        pairs = [(self.ids, catalog["video_id"], "string")] + [
            (self.values[name], catalog[name], dtype) for name, (dtype, _) in compared.items()]
        for variable, column, dtype in pairs:
            for start in range(0, self.size, chunk):
                part = np.asarray(column[start:start + chunk])
                part = part.astype(object) if dtype == "string" else part.astype(dtype)
                if not bool(tf.reduce_all(tf.equal(variable[1 + start:1 + start + len(part)], tf.constant(part)))):
                    return False
        return True

    def lookup(self, ids: tf.Tensor) -> tf.Tensor:
        """Row of each id (same shape as `ids`); 0 for ids not in the table."""
        flat = tf.reshape(ids, [-1])
        # Gathered from the value read for searchsorted, not from the variable: a gather on a variable
        # (ResourceGather) puts it in copy-on-read mode for good, and each later whole read (searchsorted's)
        # then copies it, 8 MB per lookup at 1M videos.
        rows = self.find_rows(tf.convert_to_tensor(self.fingerprints), self.fingerprint_rows, self.ids, flat)
        return tf.reshape(rows, tf.shape(ids))

    @classmethod
    def find_rows(cls, fingerprints: tf.Tensor, fingerprint_rows, stored_ids, ids: tf.Tensor) -> tf.Tensor:
        """The table row of each of the 1-D `ids`, 0 where absent, from a table's sorted `fingerprints`,
        the row of each (`fingerprint_rows`) and the id of each row (`stored_ids`): what `lookup` does,
        for callers that hold a loaded export's variables rather than the layer (a catalog refresh)."""
        fingerprint = cls._fingerprint(ids)
        # The number of rows the table holds now, not the `size` it was built with: a served catalog may be
        # refreshed to another number of videos (`tfrec_video.serving.refresh`).
        last = tf.shape(fingerprints)[0] - 1
        position = tf.minimum(tf.searchsorted(fingerprints, fingerprint), last)
        rows = tf.gather(fingerprint_rows, position)
        # A fingerprint match is confirmed by the stored id: two ids may share a fingerprint.
        found = tf.equal(tf.gather(fingerprints, position), fingerprint) & tf.equal(tf.gather(stored_ids, rows), ids)
        return tf.where(found, rows, tf.zeros_like(rows))

    def call(self, ids: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Content features of `ids` (any shape), plus `video_id` itself."""
        rows = self.lookup(ids)
        out = {name: tf.gather(value, rows) for name, value in self.values.items()}
        out["video_id"] = ids
        return out

    def embed(self, ids: tf.Tensor, encoder: Callable[[Dict[str, tf.Tensor]], tf.Tensor],
              precomputed: Optional[tf.Tensor] = None) -> tf.Tensor:
        """`encoder(self(ids))` for 1-D `ids`: `[len(ids), dim]` embeddings of the videos' content.

        Args:
          ids: video ids, `[n]`.
          encoder: content features (this layer's output) to embeddings, e.g. a candidate tower.
          precomputed: optional `[size, dim]` encodings of this table's rows by the same `encoder`
            (row i: table row i + 1), for when its weights are frozen (serving). The ids the table
            holds are then gathered from it, the encoder runs only on the others (when there are
            any: a video newer than the table still has its id), and `""` (padding) gets zeros.
            The values are the same, without a tokenizer or CNN pass per id.
        """
        if precomputed is None:
            return encoder(self(ids))
        rows = self.lookup(ids)
        known = rows > 0
        zeros = tf.zeros([1, precomputed.shape[-1]], precomputed.dtype)
        gathered = tf.where(known[:, None], tf.gather(precomputed, tf.maximum(rows - 1, 0)), zeros)
        unknown = tf.where(tf.logical_and(tf.logical_not(known), tf.not_equal(ids, "")))
        computed = tf.cond(tf.size(unknown) > 0,
                           lambda: tf.cast(encoder(self(tf.gather_nd(ids, unknown))), precomputed.dtype),
                           lambda: zeros[:0])
        return tf.tensor_scatter_nd_update(gathered, unknown, computed)

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)
        config.update(size=self.size, columns={k: [d, list(s)] for k, (d, s) in self.columns.items()})
        return config
