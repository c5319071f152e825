"""Every data validation error names the file, the row and the feature.

Bad files are made by hand (raw Examples, raw Arrow tables, raw CSV text),
because `write_table` refuses to write them.
"""

import gzip
import os

import tfrec_video  # noqa: F401  (must precede tensorflow)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tfrec_video.data import read_table, read_table_numpy, write_table
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import DataValidationError

CATALOG = catalog_schema(image_dim=4, audio_dim=3)
IMPRESSIONS = impressions_schema(history_length=3)
FORMATS = ["tfrecord", "parquet", "csv"]


# --------------------------------------------------------------------------
# Raw writers: a row is {name: (kind, values)}, kind in "s" (strings), "b" (bytes), "i", "f".
# --------------------------------------------------------------------------


def _tf_feature(kind, values):
    if kind == "s":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
    if kind == "b":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "i":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def raw_tfrecord(path, rows):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            features = {name: _tf_feature(kind, values) for name, (kind, values) in row.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return str(path)


def raw_parquet(path, columns):
    pq.write_table(pa.table(columns), str(path))
    return str(path)


def raw_csv(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


def good_impression(i):
    return {"user_id": ("s", [f"u{i}"]), "video_id": ("s", [f"v{i}"]), "clicked": ("i", [i % 2]),
            "history": ("s", ["v1"])}


def raises(fn, file, row, feature, writing=False):
    """Calls `fn`, and checks the DataValidationError it raises names file, row (a CSV file's line) and feature.

    `writing`: `row` is the row of the columns given to `write_table`, named as a row in any format.
    """
    with pytest.raises(DataValidationError) as info:
        fn()
    error = info.value
    message = str(error)
    assert error.file is not None and os.path.basename(error.file) == os.path.basename(str(file)), message
    assert os.path.basename(str(file)) in message
    if str(file).endswith(".csv") and row is not None and not writing:
        # A CSV reader names the line an editor shows (the header is line 1); these files hold one line a record.
        assert error.line == row + 2 and error.row is None, message
        assert f"line {row + 2}" in message
    else:
        assert error.row == row, message
        if row is not None:
            assert f"row {row}" in message
    assert error.feature == feature, message
    if feature is not None:
        assert repr(feature) in message
    # No TensorFlow traceback leaks through the chain.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), message
    return error


def read_both(path, schema, **kwargs):
    """Both readers must raise the same error."""
    def run():
        read_table(path, schema, **kwargs)
    def run_numpy():
        read_table_numpy(path, schema, **kwargs)
    return run, run_numpy


def check_read(path, schema, row, feature, **kwargs):
    errors = [raises(fn, path, row, feature) for fn in read_both(path, schema, **kwargs)]
    assert str(errors[0]) == str(errors[1])
    return errors[0]


# --------------------------------------------------------------------------
# Empty and unknown files.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", FORMATS + ["tfrecord.gz"])
@pytest.mark.bad_input
def test_zero_byte_file(tmp_path, ext):
    path = tmp_path / f"empty.{ext}"
    path.write_bytes(b"")
    error = check_read(str(path), CATALOG, None, None)
    assert "empty file" in str(error)


@pytest.mark.bad_input
def test_zero_row_files(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "e.tfrecord")):
        pass
    with gzip.open(tmp_path / "e.tfrecord.gz", "wb"):
        pass
    raw_parquet(tmp_path / "e.parquet", {"video_id": pa.array([], pa.string()), "title": pa.array([], pa.string())})
    raw_csv(tmp_path / "e.csv", "video_id,title\n")
    raw_csv(tmp_path / "blank.csv", "\n\n")
    for name in ["e.tfrecord", "e.tfrecord.gz", "e.parquet", "e.csv", "blank.csv"]:
        error = check_read(str(tmp_path / name), CATALOG, None, None)
        assert "empty file" in str(error), name


@pytest.mark.bad_input
def test_unknown_extension(tmp_path):
    path = raw_csv(tmp_path / "catalog.json", "video_id,title\na,b\n")
    error = check_read(path, CATALOG, None, None)
    assert ".tfrecord" in str(error) and ".parquet" in str(error) and ".csv" in str(error)


# --------------------------------------------------------------------------
# Columns.
# --------------------------------------------------------------------------


def _files_with_columns(tmp_path, names, stem):
    """The same one-row table (string columns `names`) in each format."""
    return {
        "tfrecord": raw_tfrecord(tmp_path / f"{stem}.tfrecord", [{n: ("s", ["x"]) for n in names}]),
        "parquet": raw_parquet(tmp_path / f"{stem}.parquet", {n: pa.array(["x"]) for n in names}),
        "csv": raw_csv(tmp_path / f"{stem}.csv", ",".join(names) + "\n" + ",".join("x" for _ in names) + "\n"),
    }


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.bad_input
def test_missing_required_column(tmp_path, ext):
    path = _files_with_columns(tmp_path, ["title", "category"], "c")[ext]
    error = check_read(path, CATALOG, None, "video_id")
    assert "required column is missing" in str(error)


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.bad_input
def test_unknown_column_suggests_closest_name(tmp_path, ext):
    path = _files_with_columns(tmp_path, ["vidoe_id", "video_id", "title"], "c")[ext]
    error = check_read(path, CATALOG, None, "vidoe_id")
    assert "did you mean 'video_id'?" in str(error)


@pytest.mark.bad_input
def test_duplicate_csv_column(tmp_path):
    path = raw_csv(tmp_path / "c.csv", "video_id,title,title\na,b,c\n")
    error = check_read(path, CATALOG, None, "title")
    assert "more than once" in str(error)


# --------------------------------------------------------------------------
# Values, per format: each case puts one bad value in row 2 of a 4-row file.
# --------------------------------------------------------------------------


def _impressions_files(tmp_path, feature, bad, kind="s"):
    """Four impression rows; row 2 has `bad` as the value of `feature` (raw value lists)."""
    rows = [good_impression(i) for i in range(4)]
    if bad is None:
        del rows[2][feature]
    else:
        rows[2][feature] = (kind, bad)
    return raw_tfrecord(tmp_path / "imp.tfrecord", rows)


@pytest.mark.bad_input
def test_tfrecord_int_where_string_expected(tmp_path):
    path = _impressions_files(tmp_path, "video_id", [7], kind="i")
    error = check_read(path, IMPRESSIONS, 2, "video_id")
    assert "int64_list" in str(error)


@pytest.mark.bad_input
def test_tfrecord_text_where_int_expected(tmp_path):
    path = _impressions_files(tmp_path, "clicked", ["yes"], kind="s")
    error = check_read(path, IMPRESSIONS, 2, "clicked")
    assert "bytes_list" in str(error) and "one int64 value" in str(error)


@pytest.mark.bad_input
def test_tfrecord_missing_scalar_in_one_row(tmp_path):
    path = _impressions_files(tmp_path, "clicked", None)
    error = check_read(path, IMPRESSIONS, 2, "clicked")
    assert "missing value" in str(error)


@pytest.mark.bad_input
def test_tfrecord_two_values_for_a_scalar(tmp_path):
    path = _impressions_files(tmp_path, "clicked", [0, 1], kind="i")
    error = check_read(path, IMPRESSIONS, 2, "clicked")
    assert "has 2 values" in str(error)


@pytest.mark.bad_input
def test_tfrecord_list_too_long(tmp_path):
    path = _impressions_files(tmp_path, "history", ["a", "b", "c", "d"])
    error = check_read(path, IMPRESSIONS, 2, "history")
    assert "list too long" in str(error) and "at most 3" in str(error)


@pytest.mark.bad_input
def test_tfrecord_record_that_is_not_an_example(tmp_path):
    path = str(tmp_path / "imp.tfrecord")
    good = [tf.train.Example(features=tf.train.Features(feature={
        n: _tf_feature(k, v) for n, (k, v) in good_impression(i).items()})).SerializeToString() for i in range(4)]
    good[2] = b"\xff\xff\xff not a protobuf"
    with tf.io.TFRecordWriter(path) as writer:
        for record in good:
            writer.write(record)
    check_read(path, IMPRESSIONS, 2, None)


def _catalog_tfrecord(tmp_path, feature, kind, bad, name="cat"):
    rows = [{"video_id": ("s", [f"v{i}"]), "title": ("s", ["t"]), "duration_s": ("f", [1.0]),
             "image_embedding": ("f", [0.0, 1.0, 2.0, 3.0])} for i in range(4)]
    rows[2][feature] = (kind, bad)
    return raw_tfrecord(tmp_path / f"{name}.tfrecord", rows)


def _catalog_parquet(tmp_path, feature, arrow_values, name="cat"):
    columns = {"video_id": pa.array([f"v{i}" for i in range(4)]), "title": pa.array(["t"] * 4),
               "duration_s": pa.array([1.0] * 4, pa.float32()),
               "image_embedding": pa.array([[0.0, 1.0, 2.0, 3.0]] * 4, pa.list_(pa.float32()))}
    columns[feature] = arrow_values
    return raw_parquet(tmp_path / f"{name}.parquet", columns)


def _catalog_csv(tmp_path, feature, cell, name="cat"):
    header = ["video_id", "title", "duration_s", "image_embedding"]
    rows = [[f"v{i}", "t", "1.0", "0 1 2 3"] for i in range(4)]
    rows[2][header.index(feature)] = cell
    return raw_csv(tmp_path / f"{name}.csv", "\n".join(",".join(r) for r in [header] + rows) + "\n")


@pytest.mark.bad_input
def test_wrong_vector_length(tmp_path):
    for path in [
        _catalog_tfrecord(tmp_path, "image_embedding", "f", [1.0, 2.0, 3.0]),
        _catalog_parquet(tmp_path, "image_embedding",
                         pa.array([[0.0] * 4, [0.0] * 4, [1.0] * 5, [0.0] * 4], pa.list_(pa.float32()))),
        _catalog_csv(tmp_path, "image_embedding", "1 2 3"),
    ]:
        error = check_read(path, CATALOG, 2, "image_embedding")
        assert "expected 4 values" in str(error), path


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.bad_input
def test_non_finite_float(tmp_path, bad):
    for feature, path in [
        ("duration_s", _catalog_tfrecord(tmp_path, "duration_s", "f", [bad], "a")),
        ("image_embedding", _catalog_tfrecord(tmp_path, "image_embedding", "f", [0.0, bad, 0.0, 0.0], "b")),
        ("duration_s", _catalog_parquet(tmp_path, "duration_s", pa.array([1.0, 1.0, bad, 1.0]), "c")),
        ("image_embedding", _catalog_parquet(tmp_path, "image_embedding",
                                             pa.array([[0.0] * 4, [0.0] * 4, [0.0, 0.0, 0.0, bad], [0.0] * 4]),
                                             "d")),
        ("duration_s", _catalog_csv(tmp_path, "duration_s", str(bad), "e")),
        ("image_embedding", _catalog_csv(tmp_path, "image_embedding", f"0 0 {bad} 0", "f")),
    ]:
        error = check_read(path, CATALOG, 2, feature)
        assert ("NaN" if bad != bad else "infinite") in str(error), path


@pytest.mark.bad_input
def test_float64_beyond_float32_range_is_infinite(tmp_path):
    path = _catalog_parquet(tmp_path, "duration_s", pa.array([1.0, 1.0, 1e300, 1.0]))
    check_read(path, CATALOG, 2, "duration_s")


def test_parquet_accepts_fixed_size_list_and_double(tmp_path):
    values = [[0.5, 1.0, 2.0, 3.0]] * 4
    path = _catalog_parquet(tmp_path, "image_embedding", pa.array(values, pa.list_(pa.float64(), 4)))
    got = read_table_numpy(path, CATALOG)["image_embedding"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(values, np.float32))


@pytest.mark.bad_input
def test_parquet_wrong_type(tmp_path):
    path = raw_parquet(tmp_path / "imp.parquet", {"user_id": pa.array(["u"] * 3), "video_id": pa.array(["v"] * 3),
                                                  "clicked": pa.array(["yes", "no", "yes"])})
    error = check_read(path, IMPRESSIONS, 0, "clicked")
    assert "type string" in str(error) and "one int64 value" in str(error)
    path = raw_parquet(tmp_path / "imp.parquet", {"user_id": pa.array([1, 2]), "video_id": pa.array(["v"] * 2),
                                                  "clicked": pa.array([0, 1])})
    check_read(path, IMPRESSIONS, 0, "user_id")
    path = raw_parquet(tmp_path / "imp.parquet", {"user_id": pa.array(["u"] * 2), "video_id": pa.array(["v"] * 2),
                                                  "clicked": pa.array([0, 1]), "history": pa.array(["a", "b"])})
    check_read(path, IMPRESSIONS, 0, "history")


@pytest.mark.bad_input
def test_parquet_nulls(tmp_path):
    base = {"user_id": pa.array(["u"] * 4), "video_id": pa.array(["v"] * 4), "clicked": pa.array([0, 1, 0, 1])}
    for feature, values in [
        ("clicked", pa.array([0, 1, None, 1])),
        ("user_id", pa.array(["u", "u", None, "u"])),
        ("history", pa.array([["a"], [], None, []], pa.list_(pa.string()))),
        ("history", pa.array([["a"], [], ["b", None], []], pa.list_(pa.string()))),
    ]:
        path = raw_parquet(tmp_path / "imp.parquet", {**base, feature: values})
        error = check_read(path, IMPRESSIONS, 2, feature)
        assert "null" in str(error)
    # An empty list is not null.
    path = raw_parquet(tmp_path / "imp.parquet", {**base, "history": pa.array([[], [], [], []], pa.list_(pa.string()))})
    assert read_table_numpy(path, IMPRESSIONS)["history"].tolist() == [["", "", ""]] * 4


@pytest.mark.bad_input
def test_parquet_list_too_long(tmp_path):
    base = {"user_id": pa.array(["u"] * 4), "video_id": pa.array(["v"] * 4), "clicked": pa.array([0, 1, 0, 1]),
            "history": pa.array([["a"], [], ["a", "b", "c", "d"], []])}
    check_read(raw_parquet(tmp_path / "imp.parquet", base), IMPRESSIONS, 2, "history")


def _impressions_csv(tmp_path, row2):
    lines = ["user_id,video_id,clicked,history,hour"] + [f"u{i},v{i},1,a|b,3" for i in range(4)]
    lines[3] = row2
    return raw_csv(tmp_path / "imp.csv", "\n".join(lines) + "\n")


@pytest.mark.parametrize("row2,feature,words", [
    ("u2,v2,abc,a|b,3", "clicked", "not a valid int64"),
    ("u2,v2,1.5,a|b,3", "clicked", "not a valid int64"),
    ("u2,v2,,a|b,3", "clicked", "missing value"),
    ("u2,v2,1,a|b|c|d,3", "history", "list too long"),
    ("u2,v2,1,a|b,", "hour", "missing value"),
])
@pytest.mark.bad_input
def test_csv_bad_values(tmp_path, row2, feature, words):
    error = check_read(_impressions_csv(tmp_path, row2), IMPRESSIONS, 2, feature)
    assert words in str(error)


@pytest.mark.bad_input
def test_csv_wrong_cell_count(tmp_path):
    error = check_read(_impressions_csv(tmp_path, "u2,v2,1"), IMPRESSIONS, 2, None)
    assert "3 cells" in str(error)


@pytest.mark.bad_input
def test_csv_bad_base64(tmp_path):
    path = raw_csv(tmp_path / "c.csv", "video_id,title,thumbnail\na,t,AAAA\nb,t,AAAA\nc,t,not base64!\n")
    check_read(path, CATALOG, 2, "thumbnail")


# --------------------------------------------------------------------------
# Corrupt and truncated files.
# --------------------------------------------------------------------------


def _good_file(tmp_path, ext, rows=200):
    columns = {"video_id": [f"v{i}" for i in range(rows)], "title": [f"title {i}" * 5 for i in range(rows)]}
    return write_table(columns, str(tmp_path / f"cat.{ext}"), CATALOG)


@pytest.mark.parametrize("ext", ["tfrecord", "tfrecord.gz", "parquet"])
@pytest.mark.bad_input
def test_truncated_binary_file(tmp_path, ext):
    path = _good_file(tmp_path, ext)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) * 2 // 3])
    with pytest.raises(DataValidationError) as info:
        read_table(path, CATALOG)
    assert info.value.file == path and "truncated" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.bad_input
def test_truncated_tfrecord_names_first_unreadable_row(tmp_path):
    path = _good_file(tmp_path, "tfrecord", rows=10)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-5])
    error = check_read(path, CATALOG, 9, None)
    assert "corrupt or truncated TFRecord" in str(error)


@pytest.mark.bad_input
def test_gzip_tfrecord_without_gz_suffix(tmp_path):
    path = _good_file(tmp_path, "tfrecord.gz")
    os.rename(path, str(tmp_path / "cat.tfrecord"))
    error = check_read(str(tmp_path / "cat.tfrecord"), CATALOG, 0, None)
    assert "'.gz'" in str(error)


@pytest.mark.bad_input
def test_garbage_parquet(tmp_path):
    path = tmp_path / "cat.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    check_read(str(path), CATALOG, None, None)


@pytest.mark.bad_input
def test_truncated_csv_inside_quoted_field(tmp_path):
    path = raw_csv(tmp_path / "cat.csv", 'video_id,title\na,"ok"\nb,"fine, really"\nc,"cut off in the mid')
    error = check_read(path, CATALOG, 2, None)
    assert "truncated" in str(error)


@pytest.mark.bad_input
def test_csv_that_is_not_utf8(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_bytes("video_id,title\na,caf\u00e9\n".encode("latin-1"))
    error = check_read(str(path), CATALOG, 0, None)
    assert "UTF-8" in str(error)


def test_validate_false_skips_the_eager_pass(tmp_path):
    path = _catalog_tfrecord(tmp_path, "duration_s", "f", [float("nan")])
    dataset = read_table(path, CATALOG, validate=False)  # No eager pass: no error yet.
    assert np.isnan(list(dataset.as_numpy_iterator())[2]["duration_s"])


# --------------------------------------------------------------------------
# The writer makes the same checks.
# --------------------------------------------------------------------------

GOOD = {"user_id": ["u0", "u1", "u2"], "video_id": ["v0", "v1", "v2"], "clicked": [0, 1, 0]}


@pytest.mark.parametrize("feature,values,row,words", [
    ("clicked", [0, 1, "yes"], 2, "got str"),
    ("clicked", [0, 1, None], 2, "missing value"),
    ("clicked", np.array([0.0, 1.0, 0.5]), 0, "float"),
    ("user_id", ["u0", "u1", 5], 2, "got int"),
    ("user_id", ["u0", "u1", b"\xff"], 2, "not valid UTF-8"),
    ("history", [["a"], [], ["a", "b", "c", "d"]], 2, "list too long"),
    ("history", [["a"], "abc", []], 1, "expected a sequence"),
    ("history", [["a"], None, []], 1, "missing value"),
    ("hour", [1, 2, 2 ** 70], 2, "does not fit"),
])
@pytest.mark.bad_input
def test_write_rejects_bad_values(tmp_path, feature, values, row, words):
    path = str(tmp_path / "imp.tfrecord")
    error = raises(lambda: write_table({**GOOD, feature: values}, path, IMPRESSIONS), path, row, feature)
    assert words in str(error)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("feature,values,row,words", [
    ("image_embedding", np.zeros((3, 5), np.float32), 0, "expected 4 values, got 5"),
    ("image_embedding", [[0.0] * 4, [0.0] * 3, [0.0] * 4], 1, "expected 4 values, got 3"),
    ("image_embedding", [[0.0] * 4, [0.0] * 4, [0.0, 0.0, float("nan"), 0.0]], 2, "NaN"),
    ("duration_s", [1.0, float("inf"), 2.0], 1, "infinite"),
    ("duration_s", [1.0, 1e300, 2.0], 1, "infinite"),
    ("thumbnail", [b"a", "text", b"c"], 1, "bytes features take bytes"),
])
@pytest.mark.bad_input
def test_write_rejects_bad_catalog_values(tmp_path, feature, values, row, words):
    path = str(tmp_path / "cat.parquet")
    columns = {"video_id": ["a", "b", "c"], "title": ["A", "B", "C"], feature: values}
    error = raises(lambda: write_table(columns, path, CATALOG), path, row, feature)
    assert words in str(error)


@pytest.mark.bad_input
def test_write_rejects_bad_columns(tmp_path):
    path = str(tmp_path / "imp.parquet")
    error = raises(lambda: write_table({"user_id": ["u"], "clicked": [1]}, path, IMPRESSIONS), path, None, "video_id")
    assert "required column is missing" in str(error)
    error = raises(lambda: write_table({**GOOD, "clickd": [1, 1, 1]}, path, IMPRESSIONS), path, None, "clickd")
    assert "did you mean 'clicked'?" in str(error)
    error = raises(lambda: write_table({**GOOD, "hour": [1, 2]}, path, IMPRESSIONS), path, None, "hour")
    assert "has 2 rows" in str(error)
    error = raises(lambda: write_table({k: [] for k in GOOD}, path, IMPRESSIONS), path, None, None)
    assert "no rows" in str(error)
    assert not os.listdir(tmp_path)


@pytest.mark.bad_input
def test_csv_writer_refuses_ambiguous_list_values(tmp_path):
    path = str(tmp_path / "imp.csv")
    for history, row in [([["a"], ["b|c"], []], 1), ([["a"], [], ["x", ""]], 2)]:
        raises(lambda: write_table({**GOOD, "history": history}, path, IMPRESSIONS), path, row, "history",
               writing=True)
    # The same values are fine where they can round-trip.
    write_table({**GOOD, "history": [["a"], ["b|c"], []]}, str(tmp_path / "imp.parquet"), IMPRESSIONS)
