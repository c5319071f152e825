"""`tfrec-video tune`: the search space and its errors, a search's outputs, resuming after `kill -9`, pruning."""

import json
import os
import signal
import subprocess
import sys

import optuna
import pytest
import yaml

from tfrec_video.cli import main
from tfrec_video.errors import ConfigError
from tfrec_video.training.pruning import TrialPruning, best_value
from tfrec_video.training.run_config import load_run_config, run_config_from_dict
from tfrec_video.training.search_space import (DEFAULT_SPACE, TuneConfig, check_space, parse_space, sampled_values,
                                               tune_config_from_dict)
from tfrec_video.training.study import OWNER_ATTR

from toy import PNG, SMALL_MODEL, kill_when

# Two quick epochs a trial: no head selection, calibration or served-order fit (tested elsewhere).
FAST_TRAINING = {"epochs": 2, "batch_size": 128, "shuffle_buffer": 1000, "select_heads": False, "calibrate": False,
                 "blend_list": False}
SPACE = {"model.temperature": {"low": 0.05, "high": 0.5, "log": True}, "training.batch_size": [128, 256]}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from tfrec_video.datasets import BuiltinConfig, ensure_builtin

    cache = tmp_path_factory.mktemp("builtin")
    return cache, ensure_builtin(str(cache), BuiltinConfig.tiny(), progress=False)


def _config_file(tmp_path, cache, trials, pruner="none"):
    values = {"output_dir": "tune", "data": {"builtin": "tiny", "builtin_dir": str(cache)}, "model": SMALL_MODEL,
              "training": FAST_TRAINING, "callbacks": {"recall_k": 10, "tensorboard": False, "checkpoint": False},
              "tune": {"objective": "val_recall_at_10", "trials": trials, "pruner": pruner, "seed": 3,
                       "space": SPACE}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


# -- (1) the search space ---------------------------------------------------------------------------


def test_the_default_space_parses_and_fits_the_default_run():
    tune = TuneConfig()
    assert [p.key for p in tune.params] == list(DEFAULT_SPACE)
    kinds = {p.key: p.kind for p in tune.params}
    assert kinds["model.temperature"] == "float" and kinds["model.history_pooling"] == "categorical"
    check_space(tune, run_config_from_dict({"data": {"builtin": "tiny"}}))
    assert (tune.direction, tune.random_trials) == ("maximize", 6)
    assert tune_config_from_dict({"objective": "val_logloss"}).direction == "minimize"
    assert tune_config_from_dict({"objective": "val_logloss", "direction": "maximize"}).direction == "maximize"


def test_ranges_take_the_fields_type_and_list_choices_round_trip():
    params = {p.key: p for p in parse_space({"model.embedding_dim": {"low": 16, "high": 64, "step": 16},
                                             "model.logq_weight": {"low": 0, "high": 1},
                                             "model.query_hidden_units": [[32], [64, 32]]})}
    assert params["model.embedding_dim"].kind == "int" and params["model.logq_weight"].kind == "float"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = {key: p.suggest(trial) for key, p in params.items()}
    assert values["model.embedding_dim"] in (16, 32, 48, 64) and isinstance(values["model.logq_weight"], float)
    assert values["model.query_hidden_units"] in ([32], [64, 32])
    # Optuna holds the list as its JSON text; the space decodes it back.
    assert isinstance(trial.params["model.query_hidden_units"], str)
    assert sampled_values(params.values(), trial.params) == values


@pytest.mark.bad_input
@pytest.mark.parametrize("space, message", [
    ({"model.temprature": {"low": 0.1, "high": 0.2}}, r"unknown field 'model.temprature' \(did you mean 'model.temperature'\?\)"),
    ({"export.k": [10, 20]}, r"'export.k' must be section.field with a section of \['model', 'training'\]"),
    ({"model.temperature": {"low": 0.1, "high": 0.2, "logg": True}}, r"tune.space.model.temperature: unknown field 'logg' \(did you mean 'log'\?\)"),
    ({"model.temperature": {"low": 0.5, "high": 0.1}}, r"model.temperature: low \(0.5\) must be below high \(0.1\)"),
    ({"model.learning_rate": {"low": 0, "high": 0.1, "log": True}}, r"model.learning_rate: a log range needs low > 0"),
    ({"model.embedding_dim": {"low": 8.5, "high": 32}}, r"model.embedding_dim: low must be an integer \(model.embedding_dim is an int\)"),
    ({"model.history_pooling": {"low": 0, "high": 1}}, r"model.history_pooling is not a number field; give it choices"),
    ({"training.batch_size": {"choices": []}}, r"training.batch_size: choices must be a non-empty list"),
    ({"training.batch_size": {"choices": [64], "low": 1}}, r"training.batch_size: give either choices or a range"),
    ({"model.temperature": {"high": 0.2}}, r"model.temperature: a range needs low and high \(missing low\)"),
    ({"model.temperature": 0.2}, r"model.temperature: expected \{low, high"),
    ({}, r"tune.space: expected a non-empty mapping"),
])
def test_bad_spaces_name_the_parameter(space, message):
    with pytest.raises(ConfigError, match=message):
        tune_config_from_dict({"space": space})


@pytest.mark.bad_input
@pytest.mark.parametrize("values, message", [
    ({"trials": 0}, r"tune.trials must be an integer >= 1, got 0"),
    ({"direction": "up"}, r"tune.direction must be 'maximize' or 'minimize'"),
    ({"pruner": "hyperband"}, r"tune.pruner must be one of \('median', 'none'\)"),
    ({"objective": ""}, r"tune.objective must name a metric"),
    ({"trails": 3}, r"tune: unknown field 'trails' \(did you mean 'trials'\?\)"),
])
def test_bad_tune_sections_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        tune_config_from_dict(values)


@pytest.mark.bad_input
def test_values_the_fields_reject_are_caught_before_any_trial():
    tune = tune_config_from_dict({"space": {"model.user_id_dropout": {"low": 0.0, "high": 1.0}}})
    with pytest.raises(ConfigError, match=r"tune.space.model.user_id_dropout: 1.0 is not a valid value: "
                                          r".*user_id_dropout must be in \[0, 1\)"):
        check_space(tune, run_config_from_dict({"data": {"builtin": "tiny"}}))


def test_train_reads_a_config_with_a_tune_section(tmp_path, tiny_cache):
    config = load_run_config(_config_file(tmp_path, tiny_cache[0], trials=2))
    assert config.model.embedding_dim == 16 and config.output_dir == str(tmp_path / "tune")


def test_trials_get_the_validation_files_and_the_objectives_recall(tmp_path, tiny_cache):
    from tfrec_video.cli.tune import trial_base_config

    config = load_run_config(_config_file(tmp_path, tiny_cache[0], trials=2))
    base = trial_base_config(config, tune_config_from_dict({"objective": "val_recall_at_7"}))
    assert base.data.builtin is None and base.data.test is None
    assert base.data.validation == os.path.join(tiny_cache[1], "validation")
    assert base.callbacks.recall_k == 7 and not base.export.enabled and not base.callbacks.projector
    assert base.data.history_length == 20  # the built-in dataset's widths carried over


# -- (4) pruning, (5) an objective not in the logs --------------------------------------------------------


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_the_callback_reports_each_epoch_and_prunes():
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    pruning = TrialPruning(trial, "val_auc")
    with pytest.raises(optuna.TrialPruned, match="val_auc 0.6 at epoch 1"):
        pruning.on_epoch_end(0, {"val_auc": 0.6, "loss": 1.0})
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].intermediate_values == {1: 0.6}

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    pruning = TrialPruning(trial, "val_auc")
    for epoch, value in enumerate([0.5, float("nan"), 0.7, 0.6]):
        pruning.on_epoch_end(epoch, {"val_auc": value})
    assert study.trials[0].intermediate_values == {1: 0.5, 3: 0.7, 4: 0.6}  # NaN is not reported
    assert best_value(pruning.values, "maximize") == (0.7, 3)
    assert best_value(pruning.values, "minimize") == (0.5, 1)


@pytest.mark.bad_input
def test_an_objective_missing_from_the_logs_is_a_clear_error(tmp_path, tiny_cache, capsys):
    trial = optuna.create_study().ask()
    with pytest.raises(ConfigError, match=r"tune.objective 'val_auc' is not in the epoch logs, which have "
                                          r"\['loss', 'retrieval_loss'\]. It is a validation metric"):
        TrialPruning(trial, "val_auc").on_epoch_end(0, {"loss": 1.0, "retrieval_loss": 0.5})
    with pytest.raises(ConfigError, match=r"'val_recall_at_5' is not in the epoch logs, which have \['val_auc'\]\.$"):
        TrialPruning(trial, "val_recall_at_5").on_epoch_end(0, {"val_auc": 0.5})
    # Without validation data a validation objective fails before any training.
    from tfrec_video.cli.tune import trial_base_config

    directory = tiny_cache[1]
    config = run_config_from_dict({"data": {"catalog": f"{directory}/catalog", "train": f"{directory}/train"}})
    with pytest.raises(ConfigError, match=r"tune.objective 'val_auc' is a validation metric, and the run has no "
                                          r"validation data: set data.validation"):
        trial_base_config(config, tune_config_from_dict({"objective": "val_auc"}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"catalog": f"{directory}/catalog", "train": f"{directory}/train"},
                                   "tune": {"objective": "val_auc"}}), encoding="utf-8")
    assert main(["tune", "--config", str(cfg), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tfrec-video tune: error: tune.objective 'val_auc' is a validation metric" in err and "Traceback" not in err


# -- (2) a whole search ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_writes_the_best_config_the_plot_and_the_report(tmp_path, tiny_cache, capsys):
    cfg = _config_file(tmp_path, tiny_cache[0], trials=2)
    assert main(["tune", "--config", cfg]) == 0
    out = tmp_path / "tune"
    report = json.loads((out / "tune_report.json").read_text())
    assert report["counts"]["complete"] == 2 and report["this_run"]["trials_run"] == [0, 1]
    trials = {t["number"]: t for t in report["trials"]}
    # A trial's value is its best epoch's, read from its own run.
    for number, trial in trials.items():
        history = json.loads((out / "trials" / str(number) / "report.json").read_text())["training"]["history"]
        assert trial["value"] == max(history["val_recall_at_10"]) and trial["epochs"] == 2
    assert not (tmp_path / "saved_models").exists()  # trials do not export
    best = max(trials.values(), key=lambda t: (t["value"], -t["number"]))
    assert report["best"]["trial"] == best["number"] and report["best"]["value"] == best["value"]
    # The best config is the run with the best trial's values, ready for `tfrec-video train`.
    config = load_run_config(str(out / "best_config.yaml"))
    assert config.model.temperature == best["params"]["model.temperature"]
    assert config.training.batch_size == best["params"]["training.batch_size"]
    assert config.data.builtin == "tiny" and config.output_dir == str(out / "best") and config.export.enabled
    assert "tune" not in yaml.safe_load((out / "best_config.yaml").read_text())
    assert (out / "trials.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert f"best: trial {best['number']}, val_recall_at_10 {best['value']:.4f}" in printed

    # The same command again finds the study done and runs nothing.
    assert main(["tune", "--config", cfg, "--verbose", "0"]) == 0
    again = json.loads((out / "tune_report.json").read_text())
    assert again["this_run"]["trials_run"] == [] and again["counts"]["complete"] == 2

    # One trial more, with a pruner that always prunes: it stops after its first epoch and counts as done.
    from tfrec_video.cli.tune import run_tune

    tune = tune_config_from_dict({**yaml.safe_load(open(cfg, encoding="utf-8").read())["tune"], "trials": 3})
    report = run_tune(load_run_config(cfg), tune, verbose=0, pruner=AlwaysPrune())
    pruned = report["trials"][2]
    assert report["this_run"]["trials_run"] == [2] and report["counts"]["pruned"] == 1
    assert pruned["state"] == "PRUNED" and pruned["epochs"] == 1 and len(pruned["epoch_values"]) == 1
    assert not (out / "trials" / "2" / "report.json").exists()  # left in its first epoch
    assert report["best"]["trial"] == best["number"]


# -- (3) kill -9 and resume -------------------------------------------------------------------------------


def _study(storage):
    return optuna.load_study(study_name="tune", storage=storage)


def _killable(storage) -> bool:
    """One trial finished and another training: RUNNING, claimed by its process, in its directory."""
    try:
        trials = _study(storage).trials
    except Exception:  # the study is not created yet, or the database is busy
        return False
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    return (any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and bool(running)
            and OWNER_ATTR in running[0].user_attrs and os.path.isdir(running[0].user_attrs.get("directory", "")))


@pytest.mark.slow
def test_a_killed_tune_resumes_without_repeating_finished_trials(tmp_path, tiny_cache):
    trials = 3
    cfg = _config_file(tmp_path, tiny_cache[0], trials=trials)
    storage = f"sqlite:///{tmp_path / 'tune' / 'study.db'}"
    command = [sys.executable, "-m", "tfrec_video", "tune", "--config", cfg, "--verbose", "0", "--epochs", "1"]
    # Kill it while it trains its second trial: one trial finished, one left RUNNING.
    returncode, stderr = kill_when(command, lambda: (tmp_path / "tune" / "study.db").exists() and _killable(storage),
                                   env=ENV, deadline_s=400, poll_s=0.5)
    assert returncode == -signal.SIGKILL, stderr[-3000:]
    before = {t.number: t for t in _study(storage).trials}
    finished = {n: t.params for n, t in before.items() if t.state == optuna.trial.TrialState.COMPLETE}
    killed = [n for n, t in before.items() if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1 and finished

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "tune" / "tune_report.json").read_text())
    after = {t.number: t for t in _study(storage).trials}
    done = [t for t in after.values() if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == trials
    # The killed trial is FAIL, not counted, and its values ran once more as a new trial (a retry).
    assert after[killed[0]].state == optuna.trial.TrialState.FAIL
    assert report["this_run"]["dead_trials_failed"] == killed
    retry = [t for t in done if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retry) == 1 and retry[0].params == before[killed[0]].params
    # Finished trials kept their values and numbers and were not run again; the second process ran the rest.
    assert {n: after[n].params for n in finished} == finished
    ran = report["this_run"]["trials_run"]
    assert len(ran) == trials - len(finished) and not set(ran) & set(finished) and killed[0] not in ran
    # A restarted sampler does not replay the first process's draws: no new trial repeats a finished one's values.
    assert all(after[n].params not in finished.values() for n in ran)
    assert sorted(os.listdir(tmp_path / "tune" / "trials")) == sorted(str(n) for n in after)
