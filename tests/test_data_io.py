"""Round trips, multi-file reads and atomic writes of tfrec_video.data."""

import os

import tfrec_video  # noqa: F401  (must precede tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from tfrec_video.data import detect_format, list_files, read_table, read_table_numpy, write_table
from tfrec_video.data import files as data_files, tables as data_tables
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import DataValidationError

FORMATS = ["tfrecord", "tfrecord.gz", "parquet", "csv"]

CATALOG = catalog_schema(image_dim=4, audio_dim=3)
IMPRESSIONS = impressions_schema(history_length=4)

TITLES = [
    "How to brew coffee",
    "如何冲泡咖啡 — 第二集",
    "Party time 🎉🐱👩‍👩‍👧",
    'Commas, "quotes", and\nnewlines\r\nand a trailing space ',
    "",
]
PNG_LIKE = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", b"\x00", b"", b"\xff\xfe|,\n\"", bytes(range(256))]


def catalog_columns():
    rng = np.random.RandomState(0)
    return {
        "video_id": [f"v{i}" for i in range(5)],
        "title": list(TITLES),
        "category": ["music", "news", "音乐", "sport, live", "x|y"],
        "duration_s": np.array([0.1, 1e-30, 3.4e38, 2.5, 0.0], np.float32),
        "image_embedding": rng.randn(5, 4).astype(np.float32),
        "audio_embedding": rng.randn(5, 3).astype(np.float32) * 1e-7,
        "thumbnail": list(PNG_LIKE),
    }


def impression_columns():
    return {
        "user_id": ["u1", "u2", "用户3", "u4", "u5"],
        "history": [["v3", "v1"], [], ["v4", "v3", "v2", "v1"], ["视频"], []],
        "hour": np.array([0, 23, 5, 12, 7], np.int64),
        "device": ["ios", "android", "web", "tv", "ios"],
        "video_id": ["v0", "v1", "v2", "v3", "v4"],
        "clicked": [1, 0, 0, 1, 1],
        "timestamp": np.array([2 ** 62, -(2 ** 40), 0, 1_700_000_000, 1], np.int64),
    }


def expected_numpy(columns, schema):
    """What read_table_numpy must return for `columns`."""
    out = {}
    for name, values in columns.items():
        feature = schema[name]
        if feature.kind == "list":
            padded = np.empty((len(values), feature.length), dtype=object)
            padded[...] = feature.pad
            for i, row in enumerate(values):
                padded[i, :len(row)] = row
            out[name] = padded
        elif feature.numpy_dtype is object:
            out[name] = np.array(list(values), dtype=object)
        else:
            out[name] = np.asarray(values, dtype=feature.numpy_dtype)
    return out


def assert_numpy_equal(got, want, schema):
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        feature = schema[name]
        assert got[name].shape == values.shape, name
        assert got[name].dtype == (object if feature.numpy_dtype is object else feature.numpy_dtype), name
        if feature.numpy_dtype is object:
            for a, b in zip(got[name].reshape(-1), values.reshape(-1)):
                assert type(a) is type(b) and a == b, (name, a, b)
        else:
            np.testing.assert_array_equal(got[name], values, err_msg=name)


def as_tf_expected(want, schema):
    """`want` with strings encoded as TF yields them (bytes)."""
    out = {}
    for name, values in want.items():
        if schema[name].dtype == "string":
            values = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(values)
        out[name] = values
    return out


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("table", ["catalog", "impressions"])
def test_round_trip(tmp_path, ext, table):
    schema, columns = (CATALOG, catalog_columns()) if table == "catalog" else (IMPRESSIONS, impression_columns())
    path = str(tmp_path / f"{table}.{ext}")
    assert write_table(columns, path, schema) == path
    want = expected_numpy(columns, schema)

    assert_numpy_equal(read_table_numpy(path, schema), want, schema)

    dataset = read_table(path, schema)
    spec = dataset.element_spec
    assert sorted(spec) == sorted(columns)
    for name, tensor_spec in spec.items():
        assert tensor_spec.shape.is_fully_defined(), name
        assert tensor_spec.shape == schema[name].shape, name
        assert tensor_spec.dtype == schema[name].tf_dtype, name
    rows = list(dataset.as_numpy_iterator())
    assert len(rows) == 5
    stacked = {name: np.stack([np.asarray(r[name], dtype=want[name].dtype) for r in rows]) for name in spec}
    assert_numpy_equal(stacked, as_tf_expected(want, schema), schema)


@pytest.mark.parametrize("ext", ["tfrecord", "parquet", "csv"])
def test_missing_optional_columns_are_absent(tmp_path, ext):
    columns = {"video_id": ["a", "b"], "title": ["A", "B"], "audio_embedding": np.ones((2, 3), np.float32)}
    path = write_table(columns, str(tmp_path / f"c.{ext}"), CATALOG)
    assert sorted(read_table(path, CATALOG).element_spec) == ["audio_embedding", "title", "video_id"]
    assert sorted(read_table_numpy(path, CATALOG)) == ["audio_embedding", "title", "video_id"]


def test_list_input_as_padded_2d_array(tmp_path):
    columns = impression_columns()
    columns["history"] = np.array([["v3", "v1", "", ""], ["", "", "", ""], ["v4", "v3", "v2", "v1"],
                                   ["视频", "", "", ""], ["", "", "", ""]])
    path = write_table(columns, str(tmp_path / "i.parquet"), IMPRESSIONS)
    got = read_table_numpy(path, IMPRESSIONS)
    assert_numpy_equal(got, expected_numpy(impression_columns(), IMPRESSIONS), IMPRESSIONS)


def _write_parts(directory, names, ext="parquet"):
    for name in names:
        index = int(name.split("-")[1].split(".")[0])
        write_table({"video_id": [f"v{index}a", f"v{index}b"], "title": ["t", "t"]},
                    os.path.join(directory, name), CATALOG)


def test_multi_file_read_in_sorted_order(tmp_path):
    _write_parts(str(tmp_path), ["part-2.parquet", "part-0.parquet", "part-1.parquet"])
    # Non-data files a directory may hold: markers, hidden files, unfinished writes, other files.
    for junk in ["_SUCCESS", ".part-3.parquet.crc", "part-4.parquet.tmp-abc123", "README.txt"]:
        (tmp_path / junk).write_bytes(b"junk")
    want = [b"v0a", b"v0b", b"v1a", b"v1b", b"v2a", b"v2b"]
    for paths in [str(tmp_path), str(tmp_path / "part-*.parquet"),
                  [str(tmp_path / "part-2.parquet"), str(tmp_path / "part-0.parquet"),
                   str(tmp_path / "part-1.parquet")]]:
        assert [os.path.basename(p) for p in list_files(paths)] == [
            "part-0.parquet", "part-1.parquet", "part-2.parquet"]
        got = [r["video_id"] for r in read_table(paths, CATALOG).as_numpy_iterator()]
        assert got == want, paths
    assert list(read_table_numpy(str(tmp_path), CATALOG)["video_id"]) == [v.decode() for v in want]


def test_shuffle_files_is_seeded(tmp_path):
    _write_parts(str(tmp_path), [f"part-{i}.parquet" for i in range(6)])

    def order(seed):
        return [r["video_id"] for r in read_table(str(tmp_path), CATALOG, shuffle_files=True,
                                                  seed=seed).as_numpy_iterator()]

    assert order(3) == order(3)
    assert sorted(order(3)) == sorted(order(4))
    assert order(3) != order(4) or order(3) != order(5)


def test_files_with_different_columns_are_an_error(tmp_path):
    write_table({"video_id": ["a"], "title": ["A"]}, str(tmp_path / "part-0.csv"), CATALOG)
    write_table({"video_id": ["b"], "title": ["B"], "category": ["c"]}, str(tmp_path / "part-1.csv"), CATALOG)
    with pytest.raises(DataValidationError) as info:
        read_table(str(tmp_path), CATALOG)
    message = str(info.value)
    assert "part-0.csv" in message and "part-1.csv" in message and "category" in message


def test_files_of_different_formats_are_an_error(tmp_path):
    write_table({"video_id": ["a"], "title": ["A"]}, str(tmp_path / "part-0.csv"), CATALOG)
    write_table({"video_id": ["b"], "title": ["B"]}, str(tmp_path / "part-1.parquet"), CATALOG)
    with pytest.raises(DataValidationError, match="part-0.csv.*part-1.parquet.*different formats"):
        read_table(str(tmp_path), CATALOG)


def test_list_files_errors(tmp_path):
    with pytest.raises(DataValidationError, match="no such file"):
        list_files(str(tmp_path / "nope.parquet"))
    with pytest.raises(DataValidationError, match="matches no data file"):
        list_files(str(tmp_path / "*.parquet"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataValidationError, match="holds no data files"):
        list_files(str(tmp_path))
    # With an explicit format, extension-less part files count.
    (tmp_path / "part-00000").write_bytes(b"x")
    assert [os.path.basename(p) for p in list_files(str(tmp_path), format="tfrecord")] == [
        "notes.txt", "part-00000"]


@pytest.mark.parametrize("name,fmt", [
    ("a.tfrecord", "tfrecord"), ("a.TFREC", "tfrecord"), ("s3://b/x/a.tfrecords.gz", "tfrecord"),
    ("a.parquet", "parquet"), ("hdfs://nn/a.pq", "parquet"), ("az://c/a.csv", "csv"),
])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["data.json", "data", "data.csv.gz", "data.parquet.gz"])
def test_detect_format_unknown_extension(name):
    with pytest.raises(DataValidationError) as info:
        detect_format(name)
    assert info.value.file == name
    assert ".tfrecord" in str(info.value) and ".parquet" in str(info.value) and ".csv" in str(info.value)


def test_explicit_format_overrides_extension(tmp_path):
    path = write_table({"video_id": ["a"], "title": ["A"]}, str(tmp_path / "part-00000"), CATALOG,
                       format="tfrecord")
    assert list(read_table_numpy(path, CATALOG, format="tfrecord")["video_id"]) == ["a"]
    with pytest.raises(DataValidationError, match="unknown file format"):
        read_table(path, CATALOG)


@pytest.mark.parametrize("ext", ["tfrecord", "parquet", "csv"])
def test_failed_write_leaves_existing_file_and_no_temp(tmp_path, ext):
    path = str(tmp_path / f"c.{ext}")
    write_table({"video_id": ["a"], "title": ["A"]}, path, CATALOG)
    before = open(path, "rb").read()
    with pytest.raises(DataValidationError):
        write_table({"video_id": ["b"], "title": ["B"], "duration_s": [float("nan")]}, path, CATALOG)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == [f"c.{ext}"]


@pytest.mark.parametrize("ext", ["tfrecord", "parquet", "csv"])
def test_crash_during_write_leaves_existing_file_and_no_temp(tmp_path, ext, monkeypatch):
    path = str(tmp_path / f"c.{ext}")
    write_table({"video_id": ["a"], "title": ["A"]}, path, CATALOG)
    before = open(path, "rb").read()
    module = data_tables._module(ext)
    real_write = module.write

    def crash_after_writing(temp, *args, **kwargs):
        real_write(temp, *args, **kwargs)
        assert os.path.exists(temp) and data_files.TEMP_MARKER in temp
        raise KeyboardInterrupt  # Even a BaseException must not leave the temp file.

    monkeypatch.setattr(module, "write", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        write_table({"video_id": ["b"], "title": ["B"]}, path, CATALOG)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == [f"c.{ext}"]


def test_write_creates_parent_directories(tmp_path):
    path = str(tmp_path / "a" / "b" / "c.parquet")
    write_table({"video_id": ["a"], "title": ["A"]}, path, CATALOG)
    assert os.path.exists(path)


def test_remote_file_systems_are_registered():
    schemes = tf.io.gfile.get_registered_schemes()
    for scheme in ["s3", "az", "hdfs"]:
        assert scheme in schemes


@pytest.mark.parametrize("ext", ["tfrecord", "parquet", "csv"])
def test_gfile_scheme_round_trip(ext):
    # ram:// goes through the same tf.io.gfile code path as s3://, without a network.
    path = f"ram://tfrec_video_test/{ext}/catalog.{ext}"
    columns = catalog_columns()
    write_table(columns, path, CATALOG)
    assert list_files(f"ram://tfrec_video_test/{ext}/") == [path]
    assert_numpy_equal(read_table_numpy(path, CATALOG), expected_numpy(columns, CATALOG), CATALOG)
    assert len(list(read_table(path, CATALOG))) == 5


def test_tfrecord_wire_format(tmp_path):
    """The documented Example layout, which other tools rely on."""
    path = write_table(impression_columns(), str(tmp_path / "i.tfrecord"), IMPRESSIONS)
    records = [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    assert len(records) == 5
    first, second = records[0].features.feature, records[1].features.feature
    assert sorted(first) == sorted(impression_columns())
    assert list(first["user_id"].bytes_list.value) == [b"u1"]
    assert list(records[2].features.feature["user_id"].bytes_list.value) == ["用户3".encode("utf-8")]
    assert list(first["clicked"].int64_list.value) == [1]
    assert list(first["history"].bytes_list.value) == [b"v3", b"v1"]
    # An empty list is an empty bytes_list, not a feature with no kind.
    assert second["history"].WhichOneof("kind") == "bytes_list" and not second["history"].bytes_list.value
    path = write_table(catalog_columns(), str(tmp_path / "c.tfrecord"), CATALOG)
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(path))).numpy()).features.feature
    np.testing.assert_array_equal(np.array(first["image_embedding"].float_list.value, np.float32),
                                  catalog_columns()["image_embedding"][0])
    assert list(first["thumbnail"].bytes_list.value) == [PNG_LIKE[0]]


def test_remote_crash_during_write_leaves_no_temp(monkeypatch):
    directory = "ram://tfrec_video_test/crash"
    path = f"{directory}/c.parquet"
    write_table({"video_id": ["a"], "title": ["A"]}, path, CATALOG)
    module = data_tables._module("parquet")
    real_write = module.write

    def crash_after_writing(temp, *args, **kwargs):
        real_write(temp, *args, **kwargs)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(module, "write", crash_after_writing)
    with pytest.raises(RuntimeError):
        write_table({"video_id": ["b"], "title": ["B"]}, path, CATALOG)
    assert tf.io.gfile.listdir(directory) == ["c.parquet"]
    assert list(read_table_numpy(path, CATALOG)["video_id"]) == ["a"]


def test_parquet_files_from_other_writers_stream_like_they_read(tmp_path):
    """Dictionary-encoded, large and fixed-size strings, sliced record batches and ragged lists written by
    plain pyarrow: the streamed dataset (byte blobs split in the graph) equals the numpy reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tfrec_video.data import parquet
    from tfrec_video.data.schema import Feature, TableSchema

    rng = np.random.default_rng(0)
    n = 9000  # more than one record batch of parquet.READ_BATCH rows
    words = ["", "猫", "football", "très bien", "x" * 300]
    histories = [[words[j % 5] + str(j) for j in range(i % 7)] for i in range(n)]
    table = pa.table({
        "user_id": pa.array([words[i % 5] for i in range(n)]).dictionary_encode(),
        "video_id": pa.array([f"v{i}" for i in range(n)], pa.large_string()),
        "thumb": pa.array([bytes([i % 256, 0, 255]) for i in range(n)], pa.binary(3)),
        "history": pa.array(histories, pa.list_(pa.large_string())),
        "emb": pa.array(rng.normal(size=(n, 3)).tolist(), pa.list_(pa.float64(), 3)),
        "hour": pa.array(rng.integers(0, 24, n), pa.int32()),
    })
    path = str(tmp_path / "other.parquet")
    pq.write_table(table, path, row_group_size=2500)
    schema = TableSchema("other", (Feature("user_id", "string"), Feature("video_id", "string"),
                                   Feature("thumb", "bytes"), Feature("history", "string", kind="list", length=6),
                                   Feature("emb", "float32", kind="vector", length=3), Feature("hour", "int64")))
    streamed = next(iter(read_table(path, schema).batch(n)))
    expected = read_table_numpy(path, schema)
    assert parquet.READ_BATCH < n
    for name, values in expected.items():
        got = streamed[name].numpy()
        if values.dtype == object:
            got = np.vectorize(lambda b: b.decode("utf-8") if isinstance(values.flat[0], str) else b,
                               otypes=[object])(got)
        np.testing.assert_array_equal(got, values, err_msg=name)
    assert streamed["history"].shape == (n, 6) and streamed["history"][6, 0].numpy() == b"0"
