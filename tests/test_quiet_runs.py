"""A successful run prints only what helps (issue 16, class 13).

Before: every `tfrec-video` process on a CPU-only machine printed TensorFlow's CUDA probes ("Unable
to register cuDNN factory", "Could not find cuda drivers", ...); `tfrec-video export` printed 124
lines of "Value in checkpoint could not be found" (the optimizer's slots) and "Skipping full
serialization of TF-Keras layer" (the loss tasks of a loaded model, never built). The runs here start
with no `TF_CPP_MIN_LOG_LEVEL` in the environment, as a new user's shell has none.
"""

import logging
import os
import subprocess
import sys

import pytest
import yaml

from toy import LogRecords, SMALL_MODEL, small_model, toy_data

# What a successful run must never print: each looks like a failure to a new user.
NOISE = ("WARNING", "Warning", "E0000", "E external", "Traceback", "Skipping full serialization",
         "could not be found")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(extra)
    return env


def _run(args, cwd, timeout=900, env=None):
    """Runs `python args...`, expects success; returns (stdout, stdout + stderr)."""
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                            env=env or _env(), timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return result.stdout, output


def _noise(output):
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]


def test_importing_the_package_silences_tensorflows_cpu_startup_logs(tmp_path):
    code = "import tfrec_video, os, tensorflow as tf; tf.constant(1) + 1; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    stdout, output = _run(["-c", code], tmp_path)
    assert _noise(output) == [] and stdout.split() == ["3"]
    # A value the user set wins: the logs can be had back (which of them depends on the machine).
    stdout, _ = _run(["-c", code], tmp_path, env=_env(TF_CPP_MIN_LOG_LEVEL="0"))
    assert stdout.split() == ["0"]


def test_a_loaded_model_restores_without_warnings_and_saves_whole(tmp_path):
    import gc

    import tensorflow as tf

    from tfrec_video.models import load_model, save_model

    catalog, impressions = toy_data(n_rows=300)
    model = small_model(catalog, impressions, epochs=1)  # trained: the checkpoint holds optimizer slots
    path = save_model(model, str(tmp_path / "model"))
    records = LogRecords(logging.DEBUG)
    tf.get_logger().addHandler(records)
    try:
        loaded = load_model(path)
        # The loss tasks are built, so a SavedModel of the model does not skip them.
        assert loaded.retrieval_task.built and loaded.ranking_task.built
        # The restore warns about the values it did not use when it is collected, with the model.
        del loaded
        gc.collect()
    finally:
        tf.get_logger().removeHandler(records)
    assert not [m for m in records.messages if "could not be found" in m or "unrestored values" in m]


def test_many_catalog_rankers_do_not_warn_about_retracing():
    # One evaluation ranks the catalog for the model, each baseline and the oracle, a ranker each:
    # each traced its own copy of one function, and TF warned "N out of the last M calls ... retracing".
    import numpy as np
    import tensorflow as tf

    from tfrec_video.evaluation.ranking import CatalogRanker

    records = LogRecords(logging.DEBUG)
    tf.get_logger().addHandler(records)
    try:
        rng = np.random.default_rng(0)
        for i in range(8):
            ranker = CatalogRanker(rng.normal(size=(20 + i, 4)).astype(np.float32))
            ranks = ranker(rng.normal(size=(3, 4)).astype(np.float32), np.array([0, 1, 2]))
            excluded = ranker(rng.normal(size=(3, 4)).astype(np.float32), np.array([0, 1, 2]),
                              exclude=np.array([[0], [-1], [-1]]))
            assert ranks.shape == (3,) and excluded[0] == 20 + i  # an excluded true video ranks num_videos
    finally:
        tf.get_logger().removeHandler(records)
    assert not [m for m in records.messages if "retracing" in m]


@pytest.mark.slow
def test_quickstart_tiny_is_quiet(tmp_path):
    _, output = _run(["-m", "tfrec_video", "quickstart", "--tiny", "--data-dir", str(tmp_path / "data"),
                   "--report", str(tmp_path / "report.json"), "--export-dir", str(tmp_path / "saved_models")],
                  tmp_path)
    assert (tmp_path / "report.json").is_file()
    assert _noise(output) == []


@pytest.mark.slow
def test_train_then_export_is_quiet(tmp_path):
    config = {"output_dir": str(tmp_path / "run"), "data": {"builtin": "tiny", "builtin_dir": str(tmp_path / "data")},
              "model": SMALL_MODEL, "training": {"epochs": 2}, "callbacks": {"recall_k": 10},
              "export": {"dir": str(tmp_path / "saved_models")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    _, trained = _run(["-m", "tfrec_video", "train", "--config", str(tmp_path / "cfg.yaml")], tmp_path)
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    catalogs = sorted((tmp_path / "data").glob("*/catalog"))
    assert catalogs, sorted(os.listdir(tmp_path / "data"))
    _, exported = _run(["-m", "tfrec_video", "export", "--model", str(tmp_path / "run" / "model"), "--catalog",
                     str(catalogs[0]), "--export-dir", str(tmp_path / "exported"), "-k", "20", "-n", "5"], tmp_path)
    assert (tmp_path / "exported" / "video_rec" / "1" / "saved_model.pb").is_file()
    assert {"train": _noise(trained), "export": _noise(exported)} == {"train": [], "export": []}
