"""`tfrec-video evaluate` on an exported tiny model: built-in data, the user's own files, bad inputs."""

import json
import os
import subprocess
import sys

import pytest

import tfrec_video  # noqa: F401
from tfrec_video import cli
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table, read_table_numpy, write_table
from tfrec_video.datasets import BuiltinConfig, GroundTruth, generate
from tfrec_video.evaluation import evaluate
from tfrec_video.models.config import ModelConfig
from tfrec_video.serving.export import export_saved_model
from tfrec_video.training import TrainingConfig, fit_model, video_counts

from test_quickstart import REQUIRED_KEYS

ID_ONLY_KEYS = [(section, f"id_only_{metric}@{k}") for section in ("retrieval", "cold_start", "warm_start")
                for metric in ("recall", "ndcg") for k in (10, 50, 100)]
ORACLE_KEYS = [("retrieval", "oracle_recall@100"), ("cold_start", "oracle_recall@100"), ("ranking", "oracle_auc")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny built-in dataset, a tiny model trained on it (as `quickstart --tiny` does), exported once.

    Also returns the in-memory model's own evaluation, which the exported model's must reproduce.
    """
    work = tmp_path_factory.mktemp("evaluate")
    config = BuiltinConfig.tiny()
    data = str(work / "data")
    generate(data, config, progress=False)
    splits = builtin_splits(data)
    imp_schema = impressions_schema(config.history_length)
    catalog = load_catalog(splits["catalog"], catalog_schema(config.image_dim, config.audio_dim))
    model, _ = fit_model(catalog, splits["train"], imp_schema, ModelConfig(embedding_dim=16, title_vocabulary_size=500),
                         TrainingConfig(batch_size=256, epochs=1), verbose=0)
    version_dir = export_saved_model(model, catalog, str(work / "saved_models"), name="video_rec")
    shown, clicks = video_counts(read_table(splits["train"], imp_schema, validate=False))
    keras_report = evaluate(model, catalog, impressions_dataset(splits["test"], catalog, imp_schema, 4096).unbatch(),
                            train_video_ids=shown, train_click_counts=clicks, truth=GroundTruth.load(data))
    return work, data, version_dir, keras_report


def _cli(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tfrec_video.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _has(report, keys):
    missing = [(s, k) for s, k in keys if s not in report or k not in report[s]]
    assert not missing, missing


@pytest.fixture(scope="module")
def builtin_report(exported):
    work, data, version_dir, _ = exported
    result = _cli(["evaluate", "--model", version_dir, "--data-dir", data, "--report", "builtin/report.json"], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((work / "builtin" / "report.json").read_text(encoding="utf-8")), result


@pytest.mark.slow
def test_evaluate_builtin_dataset_writes_quickstart_keys(exported, builtin_report):
    _, _, version_dir, keras_report = exported
    report, result = builtin_report
    _has(report, REQUIRED_KEYS + ID_ONLY_KEYS + ORACLE_KEYS)  # REQUIRED_KEYS has cold_start.id_only_recall@100
    assert report["counts"]["test_clicks"] > 0 and report["cold_start"]["clicks"] > 0
    assert 0.0 <= report["cold_start"]["id_only_recall@100"] <= 1.0
    assert report["model"]["path"] == os.path.abspath(version_dir)
    # The export's own served list (n = 10, its history left out) under leave-one-out.
    assert report["leave_one_out"]["list"] == "served" and report["leave_one_out"]["served_n"] == 10
    assert 0.0 <= report["leave_one_out"]["hr@10"] <= 1.0 and report["leave_one_out"]["hr@50"] is None
    assert 0.0 <= report["leave_one_out"]["history_mean_hr@50"] <= 1.0
    assert "cold_start.id_only_recall@100" in result.stdout and "retrieval.recall@100" in result.stdout
    # The SavedModel's signatures score exactly what the Keras model scores: the same metrics.
    for section in ("retrieval", "cold_start", "warm_start", "popularity", "counts"):
        for key, value in keras_report[section].items():
            assert report[section][key] == pytest.approx(value, abs=1e-6), (section, key)
    assert report["ranking"]["auc"] == pytest.approx(keras_report["ranking"]["auc"], abs=1e-4)
    assert report["ranking"]["oracle_auc"] == keras_report["ranking"]["oracle_auc"]


@pytest.mark.slow
def test_evaluate_own_files_in_other_formats(exported, builtin_report):
    """Explicit paths in TFRecord and CSV: schemas come from the SavedModel, no oracle keys."""
    work, data, version_dir, _ = exported
    imp_schema = impressions_schema(BuiltinConfig.tiny().history_length)
    own = work / "own"
    for split, name in (("train", "train.tfrecord"), ("validation", "validation.tfrecord"), ("test", "test.csv")):
        write_table(read_table_numpy(os.path.join(data, split), imp_schema), str(own / split / name), imp_schema)
    report_path = work / "own" / "report.json"
    status = cli.main(["evaluate", "--model", version_dir, "--catalog", os.path.join(data, "catalog", "*.parquet"),
                       "--train", str(own / "train" / "*.tfrecord"), "--test", str(own / "test"),
                       "--validation", str(own / "validation"), "--report", str(report_path)])
    assert status == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    _has(report, [(s, k) for s, k in REQUIRED_KEYS if not k.startswith("oracle_")] + ID_ONLY_KEYS)
    assert not any(k.startswith("oracle_") for section in report.values() if isinstance(section, dict) for k in section)
    # Same rows in the same order: the same numbers as from the built-in directory, baselines included
    # (the history-mean one chooses its epochs on --validation, as on the built-in validation split).
    expected, _ = builtin_report
    for section in ("retrieval", "cold_start", "warm_start", "popularity", "counts"):
        for key, value in report[section].items():
            assert value == pytest.approx(expected[section][key], abs=1e-6), (section, key)
    assert report["data"]["oracle"] is False


def _error(args, capsys):
    status = cli.main(["evaluate", *args])
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_data_paths_are_checked_before_the_model_loads(tmp_path, capsys):
    missing = str(tmp_path / "saved_models" / "video_rec" / "7")
    err = _error(["--model", missing, "--catalog", str(tmp_path), "--train", str(tmp_path), "--test",
                  str(tmp_path)], capsys)
    # The data paths are checked first: an empty directory is named as such.
    assert str(tmp_path) in err and "no data files" in err


@pytest.mark.slow
def test_bad_model_paths_are_clear_errors(exported, tmp_path, capsys):
    _, data, version_dir, _ = exported
    missing = str(tmp_path / "nope" / "1")
    err = _error(["--model", missing, "--data-dir", data], capsys)
    assert missing in err and "no such directory" in err
    # A model directory (the parent of the versions) is not a SavedModel; the error names the versions.
    parent = os.path.dirname(version_dir)
    err = _error(["--model", parent, "--data-dir", data], capsys)
    assert parent in err and "not a SavedModel" in err and os.path.join(parent, "1") in err


@pytest.mark.slow
def test_no_test_files_is_a_clear_error(exported, tmp_path, capsys):
    _, data, version_dir, _ = exported
    pattern = str(tmp_path / "test" / "*.parquet")
    err = _error(["--model", version_dir, "--catalog", os.path.join(data, "catalog"), "--train",
                  os.path.join(data, "train"), "--test", pattern], capsys)
    assert pattern in err and "matches no data file" in err


def test_data_dir_that_is_not_a_dataset_and_missing_flags(tmp_path, capsys):
    err = _error(["--model", str(tmp_path), "--data-dir", str(tmp_path)], capsys)
    assert str(tmp_path) in err and "dataset.json" in err
    err = _error(["--model", str(tmp_path), "--catalog", str(tmp_path)], capsys)
    assert "--train" in err and "--test" in err
    err = _error(["--model", str(tmp_path), "--data-dir", str(tmp_path), "--test", str(tmp_path)], capsys)
    assert "not both" in err
    err = _error(["--model", str(tmp_path), "--data-dir", str(tmp_path), "--baseline-epochs", "0"], capsys)
    assert "--baseline-epochs" in err
