"""join_catalog and check_ids_in_catalog."""

import tfrec_video  # noqa: F401  (must precede tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from tfrec_video.data import (check_ids_in_catalog, join_catalog, read_table, read_table_numpy,
                              write_table)
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import DataValidationError

CATALOG = catalog_schema(image_dim=3, audio_dim=2)
IMPRESSIONS = impressions_schema(history_length=2)


def catalog():
    return {
        "video_id": np.array(["v0", "v1", "v2"], dtype=object),
        "title": np.array(["zero", "一", "two 🎉"], dtype=object),
        "duration_s": np.array([10.0, 11.0, 12.0], np.float32),
        "image_embedding": np.arange(9, dtype=np.float32).reshape(3, 3),
        "thumbnail": np.array([b"\x00a", b"\x00b", b"\x00c"], dtype=object),
    }


def impressions(video_ids):
    n = len(video_ids)
    return tf.data.Dataset.from_tensor_slices({
        "user_id": [f"u{i}" for i in range(n)], "video_id": list(video_ids), "clicked": [1] * n})


@pytest.mark.parametrize("batch", [None, 2])
def test_join_adds_catalog_features(batch):
    ids = ["v2", "v0", "v1", "v2", "v0"]
    dataset = impressions(ids)
    if batch:
        dataset = dataset.batch(batch)
    joined = join_catalog(dataset, catalog())
    spec = joined.element_spec
    assert sorted(spec) == ["clicked", "duration_s", "image_embedding", "thumbnail", "title", "user_id", "video_id"]
    lead = [None] if batch else []
    assert spec["image_embedding"].shape.as_list() == lead + [3]
    assert spec["title"].dtype == tf.string and spec["duration_s"].dtype == tf.float32
    rows = list(joined.unbatch().as_numpy_iterator() if batch else joined.as_numpy_iterator())
    cat = catalog()
    for row, video_id in zip(rows, ids):
        index = int(video_id[1:])
        assert row["video_id"] == video_id.encode()
        assert row["title"] == cat["title"][index].encode()
        assert row["duration_s"] == cat["duration_s"][index]
        np.testing.assert_array_equal(row["image_embedding"], cat["image_embedding"][index])
        assert row["thumbnail"] == cat["thumbnail"][index]
    assert len(rows) == len(ids)


def test_join_selected_features_only():
    joined = join_catalog(impressions(["v1"]), catalog(), features=["title"])
    assert sorted(joined.element_spec) == ["clicked", "title", "user_id", "video_id"]
    with pytest.raises(ValueError, match="no feature 'nope'"):
        join_catalog(impressions(["v1"]), catalog(), features=["nope"])


def test_join_unknown_id_default_row():
    joined = join_catalog(impressions(["v1", "unknown"]).batch(2), catalog(), on_missing="default")
    batch = next(iter(joined.as_numpy_iterator()))
    assert list(batch["title"]) == ["一".encode(), b""]
    np.testing.assert_array_equal(batch["image_embedding"][1], np.zeros(3, np.float32))
    assert batch["duration_s"][1] == 0.0 and batch["thumbnail"][1] == b""
    np.testing.assert_array_equal(batch["image_embedding"][0], catalog()["image_embedding"][1])


def test_join_unknown_id_error_fails_the_pipeline():
    joined = join_catalog(impressions(["v1", "ghost-video"]), catalog())
    with pytest.raises(tf.errors.InvalidArgumentError, match="ghost-video"):
        list(joined.as_numpy_iterator())


def test_join_rejects_duplicate_catalog_ids():
    cat = catalog()
    cat["video_id"] = np.array(["v0", "v1", "v0"], dtype=object)
    with pytest.raises(DataValidationError) as info:
        join_catalog(impressions(["v0"]), cat)
    assert info.value.row == 2 and info.value.feature == "video_id" and "'v0'" in str(info.value)


def test_join_rejects_name_clash_and_bad_arguments():
    with pytest.raises(ValueError, match="already have"):
        join_catalog(impressions(["v0"]), {"video_id": np.array(["v0"], object), "user_id": np.array(["x"], object)})
    with pytest.raises(ValueError, match="on_missing"):
        join_catalog(impressions(["v0"]), catalog(), on_missing="skip")


def test_join_from_files(tmp_path):
    """The end-to-end path: catalog file -> numpy, impression files -> tf.data -> joined."""
    write_table(catalog(), str(tmp_path / "catalog.parquet"), CATALOG)
    write_table({"user_id": ["a", "b"], "video_id": ["v2", "v1"], "clicked": [0, 1], "history": [["v0"], []]},
                str(tmp_path / "imp" / "part-0.tfrecord"), IMPRESSIONS)
    cat = read_table_numpy(str(tmp_path / "catalog.parquet"), CATALOG)
    check_ids_in_catalog(str(tmp_path / "imp"), IMPRESSIONS, cat["video_id"])
    rows = list(join_catalog(read_table(str(tmp_path / "imp"), IMPRESSIONS), cat).as_numpy_iterator())
    assert [r["title"] for r in rows] == ["two 🎉".encode(), "一".encode()]
    assert rows[0]["history"].tolist() == [b"v0", b""]


@pytest.mark.parametrize("ext", ["tfrecord", "parquet", "csv"])
def test_check_ids_in_catalog_names_file_row_and_id(tmp_path, ext):
    ok = {"user_id": ["a", "b"], "video_id": ["v0", "v1"], "clicked": [0, 1]}
    bad = {"user_id": ["a", "b", "c"], "video_id": ["v0", "v2", "v9-missing"], "clicked": [0, 1, 0]}
    write_table(ok, str(tmp_path / f"part-0.{ext}"), IMPRESSIONS)
    write_table(bad, str(tmp_path / f"part-1.{ext}"), IMPRESSIONS)
    ids = catalog()["video_id"]
    with pytest.raises(DataValidationError) as info:
        check_ids_in_catalog(str(tmp_path), IMPRESSIONS, ids)
    error = info.value
    where = "line 4" if ext == "csv" else "row 2"
    assert error.file.endswith(f"part-1.{ext}") and error.feature == "video_id"
    assert (error.line == 4) if ext == "csv" else (error.row == 2)
    assert "'v9-missing'" in str(error) and f"part-1.{ext}, {where}" in str(error)
    # bytes ids (as TensorFlow returns them) work too, and a complete catalog passes.
    check_ids_in_catalog(str(tmp_path / f"part-0.{ext}"), IMPRESSIONS, [b"v0", b"v1"])
