"""Data: the schema, reading, writing and validating the catalog and impressions tables.

`schema` (the declared features), `files` (formats, listing, opening), `tables`
(`read_table`, `write_table`), one module per format (`tfrecord`, `parquet`, `csv`),
`validation`, `integrity` (unique ids, splits that agree, CSV lines), `join`,
`pipeline` (the `tf.data` input of training) and `media_embeddings`. The bottom layer: may import only the base modules
(`tfrec_video.errors`, `config_fields`, `distribute`).

Both tables can be stored as TFRecord (`tf.train.Example`), Parquet or CSV files,
locally or on any `tf.io.gfile` file system; importing this package imports
`tensorflow_io`, which registers `s3://`, `az://` and `hdfs://`. A
`tfrec_video.data.schema.TableSchema` is the contract every file is checked against;
problems are raised as `tfrec_video.errors.DataValidationError` naming the file,
the place in it (the line an editor shows for CSV, the header being line 1; the
0-based row for Parquet and TFRecord) and the feature.

* `write_table` writes one file, validated and atomically.
* `read_table` reads files as an unbatched `tf.data.Dataset` of `{feature: tensor}`.
* `read_table_numpy` reads a (small) table into numpy arrays.
* `join_catalog` adds catalog features to impressions inside `tf.data`, and
  `check_ids_in_catalog` checks eagerly that every impression's video is known.
* `list_files` and `detect_format` expand paths and name formats.

See the modules `tfrecord`, `parquet` and `csv` for each format's conventions.
"""

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfrec_video.data import tfrecord  # noqa: F401  (imports tensorflow_io: remote file systems)
from tfrec_video.data.files import FORMATS, detect_format, list_files
from tfrec_video.data.join import check_ids_in_catalog, join_catalog
from tfrec_video.data.tables import read_table, read_table_numpy, write_table

__all__ = [
    "FORMATS",
    "check_ids_in_catalog",
    "detect_format",
    "join_catalog",
    "list_files",
    "read_table",
    "read_table_numpy",
    "write_table",
]
