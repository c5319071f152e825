"""`tfrec-video train --config`: the config file, the callbacks, the report and plots, resume after a kill."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tfrec_video.cli import main
from tfrec_video.cli.train import HISTORY_FILE, read_history
from tfrec_video.errors import ConfigError
from tfrec_video.training.run_config import (CallbackConfig, apply_overrides, dump_run_config, load_run_config,
                                      run_config_from_dict)

from toy import PNG, SMALL_MODEL, kill_when



def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- the config file ------------------------------------------------------------------------------------


def test_yaml_and_json_configs_give_the_same_run(tmp_path):
    values = {"data": {"builtin": "tiny"}, "model": {"embedding_dim": 16}, "training": {"epochs": 2},
              "callbacks": {"recall_k": 10}, "output_dir": "runs/a"}
    from_yaml = load_run_config(_write(tmp_path / "cfg.yaml", yaml.safe_dump(values)))
    from_json = load_run_config(_write(tmp_path / "cfg.json", json.dumps(values)))
    assert from_yaml == from_json
    assert from_yaml.model.embedding_dim == 16 and from_yaml.training.epochs == 2
    # Relative paths are relative to the config file, not the working directory.
    assert from_yaml.output_dir == str(tmp_path / "runs" / "a")
    assert from_yaml.export.dir == str(tmp_path / "saved_models")


def test_round_trip_through_the_written_config(tmp_path):
    config = load_run_config(_write(tmp_path / "cfg.yaml", "data: {builtin: tiny}\nmodel: {query_hidden_units: [8, 4]}\n"))
    again = load_run_config(dump_run_config(config, str(tmp_path / "out" / "config.yaml")))
    assert again == config


def test_data_paths_resolve_against_the_config_file_and_must_exist(tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "part-0.parquet").write_bytes(b"x")
    (tmp_path / "data" / "catalog.csv").write_text("video_id\n")
    cfg = _write(tmp_path / "cfg.yaml", "data:\n  catalog: data/catalog.csv\n  train: data/train/*.parquet\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_run_config(cfg)
    assert config.data.catalog == str(tmp_path / "data" / "catalog.csv")
    assert config.data.train == str(tmp_path / "data" / "train" / "*.parquet")
    with pytest.raises(ConfigError, match=r"data.train: the glob .*\*\.tfrecord' matches no file"):
        load_run_config(cfg, ["data.train=data/train/*.tfrecord"])
    with pytest.raises(ConfigError, match=r"data.validation: '.*nope' does not exist"):
        load_run_config(cfg, ["data.validation=nope"])
    # Remote paths are checked when read, not here.
    assert load_run_config(cfg, ["data.test=s3://bucket/test/*.tfrecord"]).data.test == "s3://bucket/test/*.tfrecord"
    # The encoders' local handles are paths of the same file; a hub URL is left as it is.
    model = load_run_config(cfg, ["model.image_model=encoders/mobilenet.tflite", "model.audio_model=~/yamnet",
                                  "model.text_model=https://tfhub.dev/some/text/1"]).model
    assert model.image_model == str(tmp_path / "encoders" / "mobilenet.tflite")
    assert model.audio_model == os.path.expanduser("~/yamnet") and model.text_model == "https://tfhub.dev/some/text/1"


@pytest.mark.bad_input
@pytest.mark.parametrize("text, message", [
    ("data: {builtin: tiny}\nmodel: {embeding_dim: 8}\n", r"model: unknown field 'embeding_dim' \(did you mean 'embedding_dim'\?\)"),
    ("data: {builtin: tiny}\ntrainig: {epochs: 2}\n", r"unknown field 'trainig' \(did you mean 'training'\?\)"),
    ("data: {builtin: tiny}\ntraining: {epochs: 0}\n", r"TrainingConfig.epochs must be a positive integer, got 0"),
    ("data: {builtin: tiny}\ntraining: {batch_size: -5}\n", r"batch_size must be a positive integer, got -5"),
    ("data: {builtin: tiny}\nmodel: {learning_rate: fast}\n", r"model"),
    ("data: {builtin: small}\n", r"data.builtin must be one of \('tiny', 'default', 'sparse', 'daily'\)"),
    ("model: {embedding_dim: 8}\n", r"the `data` section is missing"),
    ("data: {train: x}\n", r"data needs `catalog` and `train` paths"),
    ("data: {builtin: tiny}\nstrategy: tpu\n", r"strategy must be one of"),
    ("data: {builtin: tiny}\ncallbacks: {early_stopping: true}\n", r"early_stopping follows 'val_auc'.*set data.validation"),
    ("data: {builtin: tiny}\ncallbacks: {monitor: val_precision}\n", r"callbacks.monitor must be"),
    ("data: {builtin: tiny}\ncallbacks: {backup_every: 0}\n", r"callbacks.backup_every must be a positive integer"),
    ("data: {builtin: tiny}\nexport: {k: 5, n: 10}\n", r"export.n \(10\) must be <= export.k \(5\)"),
    ("data: {builtin: tiny}\nexport: {name: ../escape}\n", r"export.name must be a plain directory name"),
    ("data: {builtin: tiny}\nexport: {keep_seen: 1}\n", r"export.keep_seen must be true or false, got 1"),
    ("- just\n- a list\n", r"expected a mapping of sections at the top level, got list"),
    ("data: {builtin: tiny\n", r"line 2, column 1: not valid YAML"),
    ("data: !!python/object/apply:os.system ['echo pwned']\n", r"not valid YAML"),
])
def test_bad_configs_name_the_problem(tmp_path, text, message):
    path = _write(tmp_path / "cfg.yaml", text)
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


@pytest.mark.bad_input
def test_bad_config_on_the_command_line_exits_2_without_a_traceback(tmp_path, capsys):
    path = _write(tmp_path / "cfg.yaml", "data: {builtin: tiny}\nmodel: {embeding_dim: 8}\n")
    assert main(["train", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'embedding_dim'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written for a config that does not load


def test_overrides_and_flags_beat_the_file(tmp_path):
    path = _write(tmp_path / "cfg.yaml", "data: {builtin: tiny}\ntraining: {epochs: 3, batch_size: 64}\n")
    config = load_run_config(path, ["training.epochs=7", "model.query_hidden_units=[32, 16]", "strategy=mirrored"])
    assert (config.training.epochs, config.training.batch_size) == (7, 64)
    assert config.model.query_hidden_units == (32, 16) and config.strategy == "mirrored"
    assert apply_overrides(config, ["callbacks.recall_k=5"]).callbacks.recall_k == 5
    with pytest.raises(ConfigError, match=r"--set model: unknown field 'embed_dim' \(did you mean 'embedding_dim'\?\)"):
        load_run_config(path, ["model.embed_dim=3"])
    with pytest.raises(ConfigError, match="--set expects section.field=value"):
        load_run_config(path, ["training.epochs"])
    from tfrec_video.cli import build_parser
    from tfrec_video.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--config", path, "--set", "training.epochs=5", "--epochs", "9",
                                      "--batch-size", "32", "--output-dir", str(tmp_path / "o"), "--no-export"])
    config = config_from_args(args)
    assert (config.training.epochs, config.training.batch_size) == (9, 32)
    assert config.output_dir == str(tmp_path / "o") and not config.export.enabled


def test_monitor_modes():
    assert CallbackConfig(monitor="val_recall_at_50").monitor_mode() == "max"
    assert CallbackConfig(monitor="val_recall_at_50").monitored_recall_k() == 50
    assert CallbackConfig(monitor="val_loss").monitor_mode() == "min"
    with pytest.raises(ConfigError):
        CallbackConfig(monitor="val_recall_at_0")
    assert run_config_from_dict({"data": {"builtin": "tiny"}}).callbacks.monitor == "val_auc"


# -- a whole run ----------------------------------------------------------------------------------------


def _run_config(tmp_path, cache, epochs, **callbacks):
    return {
        "output_dir": "run", "data": {"builtin": "tiny", "builtin_dir": str(cache)},
        "model": SMALL_MODEL, "training": {"epochs": epochs, "batch_size": 128, "shuffle_buffer": 1000},
        "callbacks": {"recall_k": 10, **callbacks}, "export": {"dir": "saved_models", "k": 20, "n": 5},
    }


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from tfrec_video.datasets import BuiltinConfig, ensure_builtin

    cache = tmp_path_factory.mktemp("builtin")
    directory = ensure_builtin(str(cache), BuiltinConfig.tiny(), progress=False)
    return cache, directory


@pytest.mark.slow
def test_train_writes_report_plots_checkpoints_logs_and_export(tmp_path, tiny_cache, capsys):
    cache, directory = tiny_cache
    values = _run_config(tmp_path, cache, epochs=3, early_stopping=True, monitor="val_recall_at_10", patience=5)
    values["data"]["validation"] = os.path.join(directory, "validation")
    cfg = _write(tmp_path / "cfg.yaml", yaml.safe_dump(values))
    assert main(["train", "--config", cfg, "--verbose", "2"]) == 0
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    for section in ("retrieval", "ranking", "cold_start", "recall_curve", "calibration", "training", "export"):
        assert section in report, section
    assert 0.0 < report["ranking"]["auc"] <= 1.0
    assert report["leave_one_out"]["protocol"] == "leave_one_out" and report["leave_one_out"]["events"] > 0
    assert 0.0 <= report["leave_one_out"]["history_mean_ndcg@10"] <= 1.0
    assert 0.0 <= report["retrieval"]["id_only_recall@100"] <= 1.0
    history = report["training"]["history"]
    assert len(history["loss"]) == 3 and len(history["val_recall_at_10"]) == 3
    assert all(0.0 <= r <= 1.0 for r in history["val_recall_at_10"]) and "val_auc" in history
    assert report["training"]["resumed"] is False
    # Recall@K is non-decreasing in K and reaches 1 at the catalog size.
    curve = report["recall_curve"]
    assert curve["recall"] == sorted(curve["recall"]) and curve["recall"][-1] == 1.0
    assert sum(report["calibration"]["count"]) == report["counts"]["test_impressions"]
    for name in ("loss", "recall_at_k", "calibration"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, name
    # Callbacks' files.
    assert (run / "checkpoints" / "best.index").exists()
    assert not (run / "backup").exists()  # deleted once training finished
    assert len(read_history(str(run / HISTORY_FILE))["loss"]) == 3
    events = [f for _, _, files in os.walk(run / "tensorboard") for f in files if f.startswith("events.out")]
    assert events
    metadata = (run / "tensorboard" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert metadata[0] == "video_id\ttitle\tcategory" and len(metadata) == 1 + report["counts"]["catalog_videos"]
    assert "metadata.tsv" in (run / "tensorboard" / "projector_config.pbtxt").read_text()
    # The saved model and the export.
    assert (run / "model" / "model.json").exists() and (run / "config.yaml").exists()
    assert report["export"]["path"] == str(tmp_path / "saved_models" / "video_rec" / "1")
    assert (tmp_path / "saved_models" / "video_rec" / "1" / "saved_model.pb").exists()
    out = capsys.readouterr().out
    assert "recall@100" in out and "report:" in out


@pytest.mark.slow
def test_python_dash_m_train_runs_and_stops_early(tmp_path, tiny_cache):
    cache, directory = tiny_cache
    values = _run_config(tmp_path, cache, epochs=30, early_stopping=True, monitor="val_auc", patience=1,
                         projector=False, tensorboard=False, checkpoint=False)
    values["data"]["validation"] = os.path.join(directory, "validation")
    values["model"] = {**SMALL_MODEL, "learning_rate": 0.05}  # overfits fast, so val_auc stops improving
    cfg = _write(tmp_path / "cfg.yaml", yaml.safe_dump(values))
    result = subprocess.run([sys.executable, "-m", "tfrec_video", "train", "--config", cfg, "--verbose", "2",
                             "--no-export"], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stopped = report["training"]["stopped_early_at_epoch"]
    assert stopped is not None and report["training"]["epochs_total"] < 30
    # 1-based, as in the Keras log: the last epoch the log shows.
    assert stopped == len(report["training"]["history"]["loss"])
    assert f"Epoch {stopped}/30" in result.stdout and f"Epoch {stopped + 1}/30" not in result.stdout
    assert "export" not in report


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_backup(tmp_path, tiny_cache):
    cache, _ = tiny_cache
    values = _run_config(tmp_path, cache, epochs=5, projector=False, tensorboard=False)
    # Five epochs of one objective: HeadSelection (its resume is tested in test_head_selection) would end
    # early and switch to the ranking loss mid-run, which this test's loss comparisons do not expect.
    values["training"]["select_heads"] = False
    cfg = _write(tmp_path / "cfg.yaml", yaml.safe_dump(values))
    command = [sys.executable, "-m", "tfrec_video", "train", "--config", cfg, "--verbose", "2", "--no-export"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    history = tmp_path / "run" / HISTORY_FILE
    # Kill it as soon as two epochs are logged (the backup is written before the log line).
    returncode, _ = kill_when(command, lambda: history.exists() and len(history.read_text().strip().splitlines()) >= 3,
                              env=env, poll_s=0.05)
    assert returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert (tmp_path / "run" / "backup").exists() and not (tmp_path / "run" / "report.json").exists()
    killed_at = len(read_history(str(history))["loss"])

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming the unfinished run" in result.stdout
    training = json.loads((tmp_path / "run" / "report.json").read_text())["training"]
    assert training["resumed"] is True and training["resumed_from_epoch"] >= killed_at
    assert training["epochs_run"] == 5 - training["resumed_from_epoch"]
    assert training["epochs_total"] == 5 and len(training["history"]["loss"]) == 5
    assert not (tmp_path / "run" / "backup").exists()

    # Training went on from the backup, not from scratch: the first epoch after the resume improves on
    # the last one before the kill (a fresh start would log a first-epoch loss again).
    loss = training["history"]["loss"]
    resumed_at = training["resumed_from_epoch"]
    assert loss[resumed_at] < loss[resumed_at - 1] < loss[0], loss
    # The same run without the kill ends comparably. Rows are shuffled in another order after the
    # resume, so the two are not identical: the test split has about 26 clicks, so Recall@100 moves
    # in steps of about 0.04.
    assert main(["train", "--config", cfg, "--output-dir", str(tmp_path / "straight"), "--no-export"]) == 0
    resumed = json.loads((tmp_path / "run" / "report.json").read_text())
    straight = json.loads((tmp_path / "straight" / "report.json").read_text())
    assert straight["training"]["resumed"] is False
    final = loss[-1], straight["training"]["history"]["loss"][-1]
    assert abs(final[0] - final[1]) <= 0.05 * final[1], final
    assert abs(resumed["ranking"]["auc"] - straight["ranking"]["auc"]) <= 0.05
    assert abs(resumed["retrieval"]["recall@100"] - straight["retrieval"]["recall@100"]) <= 0.1


@pytest.mark.slow
def test_train_on_two_workers_with_tf_config(tmp_path, tiny_cache):
    """`tfrec-video train --strategy multi_worker` on two localhost workers: the chief writes the run and
    the export, the other worker leaves nothing behind."""
    from test_distribute import _free_ports, _start, _wait_all

    cache, _ = tiny_cache
    values = _run_config(tmp_path, cache, epochs=2, projector=True, backup_every=3)
    values["training"]["batch_size"] = 64
    cfg = _write(tmp_path / "cfg.yaml", yaml.safe_dump(values))
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    script = tmp_path / "train_worker.py"
    script.write_text("import sys\nfrom tfrec_video.cli import main\nsys.exit(main([\"train\", *sys.argv[1:]]))\n")
    processes, logs = [], []
    for index in range(2):
        logs.append(tmp_path / f"worker-{index}.log")
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(_start(script, ["--config", cfg, "--strategy", "multi_worker", "--verbose", "2"],
                                logs[-1], TF_CONFIG=tf_config))
    _wait_all(processes, logs)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["training"]["replicas"] == 2 and report["training"]["strategy"] == "multi_worker"
    assert len(report["training"]["history"]["retrieval_loss"]) == 2
    # Metrics are aggregated over the workers once, not summed (an AUC of 1.2 was logged before).
    assert all(0.0 <= auc <= 1.0 for auc in report["training"]["history"]["auc"])
    assert report["export"]["path"] == str(tmp_path / "saved_models" / "video_rec" / "1")
    assert sorted(os.listdir(tmp_path / "saved_models" / "video_rec")) == ["1"]
    assert not [p for p in os.listdir(tmp_path / "run") if p.startswith("workertemp")]
    assert not [p for p in os.listdir(tmp_path / "saved_models") if p.startswith("workertemp")]
    assert (tmp_path / "run" / "plots" / "recall_at_k.png").exists()
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    loaded = tf.saved_model.load(report["export"]["path"])
    inputs = {name: tf.zeros([1] + spec.shape.as_list()[1:], spec.dtype) if spec.dtype != tf.string
              else tf.fill([1] + spec.shape.as_list()[1:], "")
              for name, spec in loaded.signatures["serving_default"].structured_input_signature[1].items()}
    assert loaded.signatures["serving_default"](**inputs)["video_ids"].shape == (1, 5)
