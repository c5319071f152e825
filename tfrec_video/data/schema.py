"""The declared schema of the two tables: the single source of truth for data.

Every reader, writer, validator and model input is derived from a `TableSchema`.
A `Feature` says what one column holds:

* `dtype`: one of `"string"`, `"bytes"`, `"int64"`, `"float32"`. `"bytes"` is an
  opaque binary string (encoded thumbnail or audio); `"string"` is UTF-8 text.
* `kind`: `"scalar"` (one value a row), `"vector"` (exactly `length` floats a row,
  such as an embedding) or `"list"` (0 to `length` values a row, such as the
  watch `history`; readers pad it to `length` with the feature's `pad` value,
  `""` for strings, so batches have fixed shapes).
* `required`: a file without a required column is rejected; an optional column
  may be absent from a file, and then the feature is absent from the dataset.
* `min_value` / `max_value` (numbers) and `non_empty` (strings): the documented
  range of a value. Readers and `write_table` reject a value outside it, naming
  the file, row and feature, in every format: `clicked` is 0 or 1, `hour` 0 to
  23, `duration_s` at least 0, and ids are never `""` (the pad of `history`).

Example:

>>> from tfrec_video.data.schema import catalog_schema, impressions_schema
>>> cat = catalog_schema(image_dim=1024, audio_dim=128)
>>> cat["image_embedding"].shape
(1024,)
>>> impressions_schema(history_length=20)["history"].shape
(20,)
"""

import dataclasses
from typing import Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

DTYPES = ("string", "bytes", "int64", "float32")
KINDS = ("scalar", "vector", "list")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One column of a table.

    Args:
      name: column name, as it appears in every file format.
      dtype: `"string"`, `"bytes"`, `"int64"` or `"float32"`.
      kind: `"scalar"`, `"vector"` (fixed length) or `"list"` (up to `length`).
      length: vector length, or the maximum list length. Ignored for scalars.
      required: whether every file must have this column.
      role: what the feature is for (`"id"`, `"label"`, `"content"`, `"context"`,
        `"media"`, `"history"`, `"time"`); models pick features by role.
      description: one line for docs and error messages.
      min_value: the smallest value allowed (numbers; every value of a vector
        or list), or None for no bound.
      max_value: the largest value allowed, or None for no bound.
      non_empty: strings only: `""` is not a value (ids: `""` pads histories
        and means "no video").
    """

    name: str
    dtype: str
    kind: str = "scalar"
    length: int = 0
    required: bool = False
    role: str = "content"
    description: str = ""
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    non_empty: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"Feature {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.kind not in KINDS:
            raise ValueError(f"Feature {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        if self.kind != "scalar" and (not isinstance(self.length, int) or self.length <= 0):
            raise ValueError(
                f"Feature {self.name!r}: a {self.kind} needs a positive integer length, got {self.length!r}."
            )
        bounded = self.min_value is not None or self.max_value is not None
        if bounded and self.dtype not in ("int64", "float32"):
            raise ValueError(f"Feature {self.name!r}: min_value / max_value need a number dtype, got {self.dtype!r}.")
        if self.non_empty and self.dtype != "string":
            raise ValueError(f"Feature {self.name!r}: non_empty needs a string dtype, got {self.dtype!r}.")
        if bounded and None not in (self.min_value, self.max_value) and self.min_value > self.max_value:
            raise ValueError(f"Feature {self.name!r}: min_value {self.min_value!r} > max_value {self.max_value!r}.")

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of one row's value after reading (lists are padded to `length`)."""
        return () if self.kind == "scalar" else (self.length,)

    @property
    def tf_dtype(self):
        import tensorflow as tf

        return {"string": tf.string, "bytes": tf.string, "int64": tf.int64, "float32": tf.float32}[self.dtype]

    @property
    def numpy_dtype(self):
        import numpy as np

        return {"string": object, "bytes": object, "int64": np.int64, "float32": np.float32}[self.dtype]

    @property
    def pad(self):
        """Value that pads a short list (only lists are padded)."""
        return {"string": "", "bytes": b"", "int64": 0, "float32": 0.0}[self.dtype]

    def describe(self) -> str:
        """Human wording of what is expected, for error messages."""
        bounds = f", {self.describe_range()}" if self.describe_range() else ""
        if self.kind == "scalar":
            return f"one {self.dtype} value{bounds}"
        if self.kind == "vector":
            return f"a vector of exactly {self.length} {self.dtype} values{bounds}"
        return f"a list of at most {self.length} {self.dtype} values{bounds}"

    def describe_range(self) -> str:
        """The documented range in words (`"from 0 to 23"`, `"0 or 1"`, `">= 0"`, `"not empty"`), or `""`."""
        def number(value):
            return str(int(value)) if self.dtype == "int64" or float(value).is_integer() else repr(value)

        if self.non_empty:
            return "not empty"
        if self.min_value is not None and self.max_value is not None:
            if self.dtype == "int64" and self.max_value - self.min_value == 1:
                return f"{number(self.min_value)} or {number(self.max_value)}"
            return f"from {number(self.min_value)} to {number(self.max_value)}"
        if self.min_value is not None:
            return f">= {number(self.min_value)}"
        if self.max_value is not None:
            return f"<= {number(self.max_value)}"
        return ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Feature":
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """An ordered set of features: one table (`catalog` or `impressions`).

    Args:
      name: the table's name, used in error messages.
      features: the features, in column order.
    """

    name: str
    features: Tuple[Feature, ...]

    def __post_init__(self):
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Table {self.name!r}: duplicate feature names {dupes}.")

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"Table {self.name!r} has no feature {name!r}; it has {self.names}.")

    def __contains__(self, name: str) -> bool:
        return any(f.name == name for f in self.features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    @property
    def names(self):
        return [f.name for f in self.features]

    @property
    def required(self):
        return [f.name for f in self.features if f.required]

    def select(self, names: Iterable[str]) -> "TableSchema":
        """The sub-schema of `names`, in schema order (for files that lack optional columns)."""
        wanted = set(names)
        unknown = wanted - set(self.names)
        if unknown:
            raise KeyError(f"Table {self.name!r} has no features {sorted(unknown)}; it has {self.names}.")
        return TableSchema(self.name, tuple(f for f in self.features if f.name in wanted))

    def to_dict(self) -> dict:
        return {"name": self.name, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: dict) -> "TableSchema":
        return cls(d["name"], tuple(Feature.from_dict(f) for f in d["features"]))


def catalog_schema(image_dim: Optional[int] = 1024, audio_dim: Optional[int] = 128,
                   title_embedding_dim: int = 384) -> TableSchema:
    """The catalog table: one row per video.

    Args:
      image_dim: length of `image_embedding` (1024 matches MobileNet feature vectors).
      audio_dim: length of `audio_embedding` (128 matches VGGish).
      title_embedding_dim: length of `title_embedding`, a pretrained text
        encoder's vector of the title (384 matches multilingual-e5-small).

    Returns:
      A `TableSchema`. Only `video_id` and `title` are required.
    """
    for name, dim in (("image_dim", image_dim), ("audio_dim", audio_dim), ("title_embedding_dim", title_embedding_dim)):
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"catalog_schema: {name} must be a positive integer, got {dim!r}.")
    return TableSchema(
        "catalog",
        (
            Feature("video_id", "string", required=True, role="id", description="unique video id", non_empty=True),
            Feature("title", "string", required=True, role="content", description="free text, any language"),
            Feature("category", "string", role="content", description="category name"),
            Feature("duration_s", "float32", role="content", description="duration in seconds", min_value=0),
            Feature("image_embedding", "float32", "vector", image_dim, role="content",
                    description="precomputed thumbnail embedding"),
            Feature("audio_embedding", "float32", "vector", audio_dim, role="content",
                    description="precomputed audio embedding"),
            Feature("title_embedding", "float32", "vector", title_embedding_dim, role="content",
                    description="precomputed title embedding (tfrec-video embed --text-model)"),
            Feature("thumbnail", "bytes", role="media", description="encoded JPEG or PNG thumbnail"),
            Feature("audio", "bytes", role="media", description="encoded WAV, FLAC, MP3 or OGG clip"),
        ),
    )


def impressions_schema(history_length: int = 20, day: bool = False) -> TableSchema:
    """The impressions table: one row per (user, video) shown.

    Args:
      history_length: the most history entries a row may hold; longer rows are
        rejected, shorter ones are padded with `""`.
      day: add the optional `day` feature (an impression's day of the time
        window, from 0), which the built-in dataset's one-table-a-day files
        hold (`BuiltinConfig.days`, `tfrec_video.datasets.builtin.day_files`).
        Off by default, so that a `day` column stays an unknown column to
        every other table.

    Returns:
      A `TableSchema`. `user_id`, `video_id` and `clicked` are required;
      `watch_fraction` and `watch_seconds` (what a click was worth, for
      watch-time objectives) are optional.
    """
    if not isinstance(history_length, int) or history_length <= 0:
        raise ValueError(f"impressions_schema: history_length must be a positive integer, got {history_length!r}.")
    return TableSchema(
        "impressions",
        (
            Feature("user_id", "string", required=True, role="id", description="user id", non_empty=True),
            Feature("history", "string", "list", history_length, role="history",
                    description="recently clicked video ids, newest first"),
            Feature("hour", "int64", role="context", description="hour of day, 0-23", min_value=0, max_value=23),
            Feature("device", "string", role="context", description="device type"),
            Feature("video_id", "string", required=True, role="id", description="the video shown", non_empty=True),
            Feature("clicked", "int64", required=True, role="label", description="1 if clicked, else 0",
                    min_value=0, max_value=1),
            Feature("timestamp", "int64", role="time", description="seconds since the epoch"),
            Feature("watch_fraction", "float32", role="outcome", min_value=0, max_value=1,
                    description="the share of the video watched after a click (0 without a click)"),
            Feature("watch_seconds", "float32", role="outcome", min_value=0,
                    description="seconds watched after a click (0 without a click)"),
        ) + ((Feature("day", "int64", role="time", description="day of the data's time window, from 0",
                      min_value=0),) if day else ()),
    )


def schemas_from_dims(image_dim: int = 1024, audio_dim: int = 128, history_length: int = 20) -> Dict[str, TableSchema]:
    """Both tables, keyed by name."""
    return {
        "catalog": catalog_schema(image_dim, audio_dim),
        "impressions": impressions_schema(history_length),
    }


def as_strings(values) -> np.ndarray:
    """A flat object array of `str` from string ids in any form TensorFlow or numpy hands back
    (`bytes` from tensors, `str`, numpy scalars), decoded as UTF-8."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)],
                    dtype=object)
