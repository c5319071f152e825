"""Issue 16, data values: documented ranges, unique ids, references to the catalog, splits that agree,
data nothing can be learned from, and progress on every pass over the data.

Each fault gets a `DataValidationError` that names the file, the line (CSV) or 0-based row (Parquet,
TFRecord) and the feature, before any training step; through the Python API and `tfrec-video train`.
The bad files are written around `write_table` (which refuses them too), as another tool would.
"""

import math
import os

import numpy as np
import pytest
import yaml

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.cli.main import main
from tfrec_video.data import read_table, write_table
from tfrec_video.data.integrity import check_splits_agree
from tfrec_video.data.pipeline import impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import DataValidationError
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig
from tfrec_video.towers import CatalogTable
from tfrec_video.training.fit import TrainingConfig, check_learnable, fit_model

from toy import SMALL, SMALL_MODEL

pytestmark = pytest.mark.bad_input

HISTORY = 3
IMPRESSIONS = impressions_schema(history_length=HISTORY)
CATALOG = catalog_schema(image_dim=4, audio_dim=2)
FORMATS = ("csv", "parquet", "tfrecord")
N_VIDEOS = 8


# -- tiny data, and files written without write_table's checks ---------------------------------------------


def catalog_columns(n=N_VIDEOS):
    return {"video_id": [f"v{i}" for i in range(n)], "title": [f"title {i % 3} word{i}" for i in range(n)],
            "duration_s": [float(10 + i) for i in range(n)]}


def impression_columns(n=40, seed=0):
    rng = np.random.default_rng(seed)
    videos = [f"v{i % N_VIDEOS}" for i in range(n)]
    return {"user_id": [f"u{i % 5}" for i in range(n)],
            "history": [[f"v{(i + 1) % N_VIDEOS}"] if i % 2 else [] for i in range(n)],
            "hour": rng.integers(0, 24, n).tolist(), "device": ["tv" if i % 3 else "phone" for i in range(n)],
            "video_id": videos, "clicked": [int(i % 3 == 0) for i in range(n)]}


def write_raw(path, columns, schema):
    """Writes `columns` (python values) in the format of `path`'s extension, with no validation at all."""
    names = list(columns)
    n = len(columns[names[0]])
    fmt = path.rsplit(".", 1)[-1]
    if fmt == "csv":
        def cell(name, value):
            if schema[name].kind == "list":
                return "|".join(value)
            return value if isinstance(value, str) else repr(value)
        lines = [",".join(names)] + [",".join(cell(k, columns[k][i]) for k in names) for i in range(n)]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: columns[k] for k in names}), path)
    else:
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(n):
                feature = {}
                for k in names:
                    value = columns[k][i]
                    values = value if isinstance(value, list) else [value]
                    if schema[k].dtype == "string":
                        feature[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
                    elif schema[k].dtype == "int64":
                        feature[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                    else:
                        feature[k] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def assert_names(error, path, feature, row, fmt):
    """The error names the file, the feature, and the CSV line (header = line 1) or the 0-based row."""
    message = str(error)
    assert error.file == str(path) and str(path) in message, message
    assert error.feature == feature and repr(feature) in message, message
    if fmt == "csv":
        assert error.line == row + 2 and f"line {row + 2}" in message, message
    else:
        assert error.row == row and f"row {row}" in message, message


SMALL_TRAINING = TrainingConfig(batch_size=16, epochs=1, shuffle_buffer=64, select_heads=False, calibrate=False,
                                blend_list=False)


# -- 4. values outside their documented range ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("feature, bad", [("clicked", 2), ("clicked", -1), ("hour", 24), ("hour", -1),
                                          ("user_id", ""), ("video_id", "")])
def test_an_impression_value_out_of_range_is_refused_when_read(tmp_path, fmt, feature, bad):
    columns = impression_columns(n=6)
    columns[feature][4] = bad
    path = write_raw(str(tmp_path / f"train.{fmt}"), columns, IMPRESSIONS)
    with pytest.raises(DataValidationError) as info:
        read_table(path, IMPRESSIONS)
    assert_names(info.value, path, feature, 4, fmt)
    assert ("out of range" if bad != "" else "empty value") in str(info.value)
    if feature == "clicked":
        assert "0 or 1" in str(info.value)
    if feature == "hour":
        assert "from 0 to 23" in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_negative_duration_is_refused_by_load_catalog(tmp_path, fmt):
    columns = catalog_columns()
    columns["duration_s"][3] = -5.0
    path = write_raw(str(tmp_path / f"catalog.{fmt}"), columns, CATALOG)
    with pytest.raises(DataValidationError) as info:
        load_catalog(path, CATALOG)
    assert_names(info.value, path, "duration_s", 3, fmt)
    assert "-5.0 is out of range" in str(info.value) and ">= 0" in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("feature, bad", [("clicked", 2), ("hour", 24), ("video_id", "")])
def test_write_table_refuses_out_of_range_values_and_writes_nothing(tmp_path, fmt, feature, bad):
    columns = impression_columns(n=5)
    columns[feature][1] = bad
    path = tmp_path / f"imp.{fmt}"
    with pytest.raises(DataValidationError) as info:
        write_table(columns, str(path), IMPRESSIONS)
    assert info.value.row == 1 and info.value.feature == feature
    assert os.listdir(tmp_path) == []


def test_adapt_refuses_a_label_that_is_not_0_or_1_in_memory_too():
    catalog = {k: np.array(v, object) for k, v in catalog_columns().items() if k != "duration_s"}
    impressions = {"user_id": np.array(["u1", "u2", "u3"], object), "video_id": np.array(["v1", "v2", "v3"], object),
                   "clicked": np.array([0, 1, 2])}
    with pytest.raises(DataValidationError, match=r"row 2: feature 'clicked': value 2 is out of range"):
        adapt(catalog, impressions, title_vocabulary_size=40)


# -- 5. unique ids and references to the catalog ---------------------------------------------------------


def test_load_catalog_names_both_rows_of_a_duplicate_video_id_in_a_csv(tmp_path):
    columns = catalog_columns()
    columns["video_id"][5] = "v1"
    path = write_raw(str(tmp_path / "catalog.csv"), columns, CATALOG)
    with pytest.raises(DataValidationError) as info:
        load_catalog(path, CATALOG)
    assert_names(info.value, path, "video_id", 5, "csv")
    assert f"duplicate video_id 'v1', also at {path}, line 3" in str(info.value)


def test_load_catalog_names_a_duplicate_across_files_by_file_and_row(tmp_path):
    first, second = catalog_columns(4), catalog_columns(4)
    second["video_id"] = ["w0", "w1", "v2", "w3"]
    write_table(first, str(tmp_path / "cat" / "part-0.parquet"), CATALOG)
    write_table(second, str(tmp_path / "cat" / "part-1.parquet"), CATALOG)
    with pytest.raises(DataValidationError) as info:
        load_catalog(str(tmp_path / "cat"), CATALOG)
    assert_names(info.value, str(tmp_path / "cat" / "part-1.parquet"), "video_id", 2, "parquet")
    assert f"also at {tmp_path / 'cat' / 'part-0.parquet'}, row 2" in str(info.value)


def test_catalog_table_refuses_a_duplicate_id_clearly_and_stays_empty():
    table = CatalogTable(3, {"title": ("string", [])})
    catalog = {"video_id": np.array(["a", "b", "a"], object), "title": np.array(["x", "y", "z"], object)}
    with pytest.raises(DataValidationError, match=r"row 2: feature 'video_id': duplicate video_id 'a', also at .*row 0"):
        table.set_catalog(catalog)
    assert table.ids.numpy().tolist() == [b""] * 4 and table.values["title"].numpy().tolist() == [b""] * 4


def _files(tmp_path, fmt="parquet", catalog=None, train=None, validation=None):
    cat = str(tmp_path / f"catalog.{fmt}")
    write_raw(cat, catalog or catalog_columns(), CATALOG)
    out = {"catalog": cat, "train": write_raw(str(tmp_path / f"train.{fmt}"), train or impression_columns(), IMPRESSIONS)}
    if validation is not None:
        out["validation"] = write_raw(str(tmp_path / f"validation.{fmt}"), validation, IMPRESSIONS)
    return out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_fit_model_names_the_impression_whose_video_is_not_in_the_catalog(tmp_path, fmt):
    train = impression_columns()
    train["video_id"][7] = "v-gone"
    files = _files(tmp_path, fmt, train=train)
    catalog = load_catalog(files["catalog"], CATALOG)
    with pytest.raises(DataValidationError) as info:
        fit_model(catalog, files["train"], IMPRESSIONS, ModelConfig(**SMALL), SMALL_TRAINING, verbose=0)
    assert_names(info.value, files["train"], "video_id", 7, fmt)
    assert "'v-gone' is not in the catalog" in str(info.value)


def test_a_history_may_name_videos_outside_the_catalog():
    catalog = {k: np.array(v, object) for k, v in catalog_columns().items() if k != "duration_s"}
    impressions = {"user_id": np.array(["u1", "u2"], object), "video_id": np.array(["v1", "v2"], object),
                   "history": np.array([["v-removed"], [""]], object), "clicked": np.array([1, 0])}
    vocab = adapt(catalog, impressions, title_vocabulary_size=40, check_catalog=True)
    assert vocab.video_ids == ["v1", "v2"]


# -- 7. splits that disagree ---------------------------------------------------------------------------------


def _without_context(columns):
    return {k: v for k, v in columns.items() if k not in ("hour", "device")}


def test_check_splits_agree_names_both_files_and_the_columns_that_differ(tmp_path):
    files = _files(tmp_path, "csv", validation=_without_context(impression_columns(12, seed=1)))
    check_splits_agree({"train": files["train"], "validation": files["train"], "test": None}, IMPRESSIONS)
    with pytest.raises(DataValidationError) as info:
        check_splits_agree({"train": files["train"], "validation": files["validation"]}, IMPRESSIONS)
    message = str(info.value)
    assert info.value.file == files["validation"]
    assert f"only the train file '{files['train']}' has ['device', 'hour']" in message, message
    assert "the validation and train files have different columns" in message


def test_fit_model_checks_the_validation_columns_before_training(tmp_path):
    files = _files(tmp_path, validation=_without_context(impression_columns(12, seed=1)))
    catalog = load_catalog(files["catalog"], CATALOG)
    with pytest.raises(DataValidationError, match=r"only the train file .*train\.parquet' has \['device', 'hour'\]"):
        fit_model(catalog, files["train"], IMPRESSIONS, ModelConfig(**SMALL), SMALL_TRAINING,
                  validation_paths=files["validation"], verbose=0)


# -- 8. data nothing can be learned from ---------------------------------------------------------------------


@pytest.mark.parametrize("case, message", [
    ("no_clicks", r"none of the 40 training impressions is clicked"),
    ("all_clicks", r"all 40 training impressions are clicked: the ranking head cannot learn"),
    ("one_video", r"every click of the training impressions is on the same video"),
])
def test_fit_model_refuses_data_nothing_can_be_learned_from(tmp_path, case, message):
    train = impression_columns()
    if case == "no_clicks":
        train["clicked"] = [0] * 40
    elif case == "all_clicks":
        train["clicked"] = [1] * 40
    else:
        train["clicked"] = [int(v == "v3") for v in train["video_id"]]
    files = _files(tmp_path, train=train)
    catalog = load_catalog(files["catalog"], CATALOG)
    with pytest.raises(DataValidationError, match=message) as info:
        fit_model(catalog, files["train"], IMPRESSIONS, ModelConfig(**SMALL), SMALL_TRAINING, verbose=0)
    assert info.value.file == files["train"] and info.value.feature == "clicked"


def test_what_a_head_that_is_off_does_not_need_is_allowed_and_one_user_is_a_warning():
    shape = {"impressions": 10, "clicks": 10, "clicked_videos": 2, "users": 2}
    check_learnable(shape, ModelConfig(**SMALL, ranking_weight=0.0))         # retrieval alone: clicks suffice
    with pytest.raises(DataValidationError, match="model.ranking_weight: 0"):
        check_learnable(shape, ModelConfig(**SMALL))
    shape = {"impressions": 10, "clicks": 3, "clicked_videos": 1, "users": 2}
    check_learnable(shape, ModelConfig(**SMALL, retrieval_weight=0.0))       # ranking alone: one video is fine
    with pytest.warns(UserWarning, match="all come from one user"):
        check_learnable({"impressions": 10, "clicks": 3, "clicked_videos": 2, "users": 1}, ModelConfig(**SMALL))


# -- 13. progress on every pass, and a known number of steps -------------------------------------------------


def test_adapt_shows_progress_only_when_asked(capsys):
    catalog = {k: np.array(v, object) for k, v in catalog_columns().items() if k != "duration_s"}
    impressions = tf.data.Dataset.from_tensor_slices(
        {"user_id": ["u1", "u2", "u1"], "video_id": ["v1", "v2", "v3"], "clicked": tf.constant([1, 0, 1], tf.int64)})
    adapt(catalog, impressions, title_vocabulary_size=40)
    assert capsys.readouterr().err == ""
    vocab = adapt(catalog, impressions, title_vocabulary_size=40, progress=True)
    assert "adapt: reading the training impressions" in capsys.readouterr().err
    assert vocab.data_shape["impressions"] == 3 and vocab.data_shape["clicks"] == 2


def test_the_training_dataset_has_an_exact_cardinality(tmp_path):
    files = _files(tmp_path, "csv", train=impression_columns(37))
    catalog = load_catalog(files["catalog"], CATALOG)
    for drop, steps in ((False, math.ceil(37 / 8)), (True, 37 // 8)):
        data = impressions_dataset(files["train"], catalog, IMPRESSIONS, 8, shuffle=True, num_rows=37,
                                   drop_remainder=drop)
        assert int(data.cardinality()) == steps and len(list(data)) == steps
    assert int(impressions_dataset(files["train"], catalog, IMPRESSIONS, 8).cardinality()) < 0  # unknown, not made up
    wrong = impressions_dataset(files["train"], catalog, IMPRESSIONS, 8, num_rows=40)
    with pytest.raises(tf.errors.OpError, match="expected to contain 40 elements"):
        list(wrong)


@pytest.mark.slow
def test_fit_model_gives_keras_the_number_of_steps_of_the_first_epoch(tmp_path):
    files = _files(tmp_path, train=impression_columns(37))
    catalog = load_catalog(files["catalog"], CATALOG)
    seen = []

    class Steps(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params.get("steps"))

    fit_model(catalog, files["train"], IMPRESSIONS, ModelConfig(**SMALL), SMALL_TRAINING, callbacks=[Steps()],
              verbose=0)
    assert seen == [math.ceil(37 / 16)]


# -- the same faults through `tfrec-video train` -----------------------------------------------------------------


def _train_cli(tmp_path, files, capsys):
    data = {"catalog": files["catalog"], "train": files["train"], "history_length": HISTORY, "image_dim": 4,
            "audio_dim": 2}
    if "validation" in files:
        data["validation"] = files["validation"]
    config = {"output_dir": str(tmp_path / "run"), "data": data, "model": SMALL_MODEL,
              "training": {"epochs": 1, "batch_size": 16, "select_heads": False, "calibrate": False,
                           "blend_list": False},
              "callbacks": {"recall_k": 5}, "export": {"enabled": False}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    code = main(["train", "--config", str(path), "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("tfrec-video train: error: "), err
    return err


def test_cli_train_names_a_label_out_of_range(tmp_path, capsys):
    train = impression_columns()
    train["clicked"][9] = 2
    err = _train_cli(tmp_path, _files(tmp_path, "csv", train=train), capsys)
    assert f"{tmp_path / 'train.csv'}, line 11: feature 'clicked': value 2 is out of range" in err


def test_cli_train_names_a_duplicate_catalog_video(tmp_path, capsys):
    catalog = catalog_columns()
    catalog["video_id"][6] = "v0"
    err = _train_cli(tmp_path, _files(tmp_path, "parquet", catalog=catalog), capsys)
    assert f"{tmp_path / 'catalog.parquet'}, row 6: feature 'video_id': duplicate video_id 'v0', also at" in err


def test_cli_train_names_an_unknown_video(tmp_path, capsys):
    train = impression_columns()
    train["video_id"][12] = "v404"
    err = _train_cli(tmp_path, _files(tmp_path, "csv", train=train), capsys)
    assert f"{tmp_path / 'train.csv'}, line 14: feature 'video_id': video_id 'v404' is not in the catalog" in err


def test_cli_train_names_splits_that_disagree(tmp_path, capsys):
    files = _files(tmp_path, "parquet", validation=_without_context(impression_columns(12, seed=1)))
    err = _train_cli(tmp_path, files, capsys)
    assert f"{files['validation']}: the validation and train files have different columns" in err
    assert "['device', 'hour']" in err


def test_cli_train_refuses_data_without_clicks(tmp_path, capsys):
    train = impression_columns()
    train["clicked"] = [0] * len(train["clicked"])
    err = _train_cli(tmp_path, _files(tmp_path, "parquet", train=train), capsys)
    assert "feature 'clicked': none of the 40 training impressions is clicked" in err
