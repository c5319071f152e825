"""Issue 16, the run directory: one writer at a time, a finished training kept across a kill, output paths
checked before any work (`tfrec_video.cli.run_dir`).

Each case goes through the command line (`main([...])` or `python -m tfrec_video`) and the Python API
(`run_training`, `run_quickstart`, `run_evaluate`). Where a case must not train, `fit_model` is replaced by
one that raises `FitCalled`, so "it did not train" is checked, not assumed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

import tfrec_video
from tfrec_video.cli import main
from tfrec_video.cli.run_dir import (LOCK_FILE, TRAINED_FILE, RunDirBusy, RunDirLock, lock_run_dir,
                                     reusable_training, training_fingerprint, write_trained)
from tfrec_video.cli.train import HISTORY_FILE, resolve_data, run_training
from tfrec_video.errors import ConfigError
from tfrec_video.training.run_config import load_run_config

from toy import SMALL_MODEL, kill_when

pytestmark = pytest.mark.bad_input

# Subprocesses import the tfrec_video this process tests, wherever their script lies.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tfrec_video.__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
           PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


class FitCalled(Exception):
    """Raised by the stand-in `fit_model`: the run went on to train."""


@pytest.fixture
def no_fit(monkeypatch):
    """`fit_model` raises `FitCalled` (`run_training` and quickstart look it up when they run)."""
    def fit_model(*args, **kwargs):
        raise FitCalled()

    monkeypatch.setattr("tfrec_video.training.fit.fit_model", fit_model)
    monkeypatch.setattr("tfrec_video.cli.quickstart.fit_model", fit_model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny built-in dataset's directory and config."""
    from tfrec_video.datasets import BuiltinConfig, ensure_builtin

    config = BuiltinConfig.tiny()
    return ensure_builtin(str(tmp_path_factory.mktemp("builtin")), config, progress=False), config


def _config(tmp_path, tiny, epochs=2, export=True, name="cfg.yaml"):
    """A run on the tiny dataset's files, with no validation or test split: training and export only, fast."""
    directory, dataset = tiny
    values = {
        "output_dir": "run",
        "data": {"catalog": os.path.join(directory, "catalog"), "train": os.path.join(directory, "train"),
                 "history_length": dataset.history_length, "image_dim": dataset.image_dim,
                 "audio_dim": dataset.audio_dim},
        "model": SMALL_MODEL, "training": {"epochs": epochs, "batch_size": 256, "shuffle_buffer": 1000},
        "callbacks": {"recall_k": 0, "projector": False, "tensorboard": False, "checkpoint": False},
        "export": {"enabled": export, "dir": "saved_models", "k": 20, "n": 5},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def _one_error_line(err, command="train"):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tfrec-video {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))
            if (directory / name).is_file()}


def _script(tmp_path, name, patches):
    """A `tfrec-video train` process with `patches` (Python source) applied first."""
    path = tmp_path / name
    path.write_text("import os, signal, sys, time\n" + patches +
                    "\nfrom tfrec_video.cli import main\nsys.exit(main(['train', *sys.argv[1:]]))\n")
    return [sys.executable, str(path)]


# -- class 9: output paths that cannot work ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["output_dir is a file", "output_dir below a file", "export.dir is a file",
                                  "export.dir/name is a file"])
def test_an_output_path_that_is_a_file_fails_first_with_one_line(tmp_path, tiny, no_fit, capsys, case):
    cfg = _config(tmp_path, tiny)
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    # (flags, the same as overrides, the path the message names, what it says of it)
    flags, overrides, named, says = {
        "output_dir is a file": (["--output-dir", str(taken)], [f"output_dir={taken}"], taken,
                                 "is a file, not a directory"),
        "output_dir below a file": (["--output-dir", str(taken / "run")], [f"output_dir={taken / 'run'}"],
                                    taken / "run", f"cannot be created: {taken} is a file"),
        "export.dir is a file": (["--set", f"export.dir={taken}"], [f"export.dir={taken}"], taken,
                                 "is a file, not a directory"),
        "export.dir/name is a file": (["--set", f"export.dir={tmp_path}", "--set", "export.name=taken"],
                                      [f"export.dir={tmp_path}", "export.name=taken"], taken,
                                      "is a file, not a directory"),
    }[case]
    assert main(["train", "--config", cfg, *flags]) == 2
    line = _one_error_line(capsys.readouterr().err)
    label = {"export.dir/name is a file": "export.dir/export.name"}.get(case, case.split(" ")[0])
    assert f"{label} {named} {says}" in line, line
    with pytest.raises(ConfigError, match="is a file"):
        run_training(load_run_config(cfg, overrides), verbose=0)
    # Nothing trained (no FitCalled), nothing written, the file left as it was.
    assert taken.read_text() == "not a directory\n"
    assert not (tmp_path / "run").exists()


def test_the_other_commands_check_their_output_paths_first(tmp_path, tiny, no_fit, capsys):
    from tfrec_video.cli.evaluate import run_evaluate
    from tfrec_video.cli.quickstart import run_quickstart

    taken = tmp_path / "taken"
    taken.write_text("x")
    cache = os.path.dirname(tiny[0])
    commands = {
        "quickstart": ["quickstart", "--tiny", "--data-dir", cache, "--export-dir", str(taken)],
        "export": ["export", "--model", str(tmp_path / "model"), "--catalog", "c.csv", "--export-dir", str(taken)],
        "evaluate": ["evaluate", "--model", str(tmp_path / "v1"), "--data-dir", tiny[0], "--report", str(tmp_path)],
        "generate-data": ["generate-data", "--tiny", "--out", str(taken), "--no-progress"],
        "embed": ["embed", "--catalog", "media.csv", "--out", str(taken), "--quiet"],
    }
    for command, argv in commands.items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        wanted = f"{tmp_path} is a directory, not a file" if command == "evaluate" else f"{taken} is a file"
        assert wanted in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (command, err)
    with pytest.raises(ConfigError, match=f"export_dir .*{taken} is a file"):
        run_quickstart(cache, export_dir=str(taken), report_path=str(tmp_path / "r.json"), verbose=0)
    with pytest.raises(ConfigError, match="report_path .* is a directory"):
        run_evaluate(str(tmp_path / "v1"), data_dir=tiny[0], report_path=str(tmp_path), verbose=0)
    assert taken.read_text() == "x"


_AS_NOBODY = """
import json, sys
from tfrec_video.cli import main
from tfrec_video.cli.train import run_training
from tfrec_video.errors import ConfigError
from tfrec_video.training.run_config import load_run_config

cfg, locked = sys.argv[1], sys.argv[2]
codes = {"train": main(["train", "--config", cfg, "--output-dir", locked + "/run"]),
         "train_export": main(["train", "--config", cfg, "--set", "export.dir=" + locked + "/saved"]),
         "quickstart": main(["quickstart", "--tiny", "--export-dir", locked + "/saved", "--report", "r.json"])}
try:
    run_training(load_run_config(cfg, ["output_dir=" + locked + "/run"]), verbose=0)
    codes["api"] = "no error"
except ConfigError as error:
    codes["api"] = str(error)
print(json.dumps(codes))
"""


def _run_as_nobody(argv, **kwargs):
    """`subprocess.run(argv)` as uid and gid 65534 with no capabilities; skips when this Python cannot run so."""
    kwargs.update(capture_output=True, text=True, timeout=300)
    setpriv = shutil.which("setpriv")
    try:
        if setpriv:  # execs with root's rights to reach the interpreter, then runs with none
            return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv], **kwargs)
        return subprocess.run(argv, user=65534, group=65534, extra_groups=[], **kwargs)
    except PermissionError as error:
        pytest.skip(f"uid 65534 cannot start {argv[0]}: {error}")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run as another user")
def test_an_unwritable_output_dir_is_one_clear_line_for_a_user_without_rights(tmp_path):
    """Root writes through mode bits, so the run is a process of uid 65534 (nobody) in a root-owned folder."""
    shared = tempfile.mkdtemp(prefix="tfrec-video-nobody-")
    try:
        os.chmod(shared, 0o755)  # nobody reads the config and the script, and may write nothing here
        home = os.path.join(shared, "home")  # the one place nobody may write
        os.mkdir(home)
        os.chmod(home, 0o777)
        cfg = os.path.join(shared, "cfg.yaml")
        with open(cfg, "w", encoding="utf-8") as f:
            yaml.safe_dump({"data": {"builtin": "tiny", "builtin_dir": os.path.join(shared, "cache")},
                            "output_dir": os.path.join(home, "run"), "export": {"dir": os.path.join(home, "saved")}},
                           f)
        script = os.path.join(shared, "as_nobody.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(_AS_NOBODY)
        result = _run_as_nobody([sys.executable, script, cfg, shared], cwd=home,
                                env=dict(ENV, HOME=home, MPLCONFIGDIR=home))
        assert result.returncode == 0, result.stderr[-3000:]
        codes = json.loads(result.stdout.strip().splitlines()[-1])
        assert {codes[k] for k in ("train", "train_export", "quickstart")} == {2}, codes
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("tfrec-video ")]
        assert len(errors) == 3, result.stderr[-3000:]
        for line, path in zip(errors, ("run", "saved", "saved")):
            assert f"{shared}/{path} is not writable" in line and "Permission denied" in line, line
        assert f"output_dir {shared}/run is not writable" in codes["api"]
        assert sorted(os.listdir(shared)) == ["as_nobody.py", "cfg.yaml", "home"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# -- class 2: one run per output directory -----------------------------------------------------------------

_HOLD = ("import sys, time\nfrom tfrec_video.cli.run_dir import RunDirLock\n"
         "lock = RunDirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n")


def test_a_busy_output_dir_is_refused_without_touching_it_until_its_holder_dies(tmp_path, tiny, no_fit, capsys):
    cfg = _config(tmp_path, tiny)
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # The first run's files, as a second run must leave them.
        (run / "config.yaml").write_text("the first run's config\n")
        (run / HISTORY_FILE).write_text("epoch,loss\n0,1.0\n")
        before = _snapshot(run)
        started = time.time()
        assert main(["train", "--config", cfg]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert time.time() - started < 30, "the second run must stop at once, not after reading the data"
        assert f"output_dir {run} is in use by another run" in line and f"pid {holder.pid} on host" in line, line
        with pytest.raises(RunDirBusy) as busy:
            run_training(load_run_config(cfg), verbose=0)
        assert busy.value.holder["pid"] == holder.pid and busy.value.directory == str(run)
        assert _snapshot(run) == before
        # The workers of a multi_worker run share the chief's directory knowingly: they take no lock.
        with lock_run_dir(str(run), chief=False):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    # kill -9 left the lock file with the dead holder's details; the kernel dropped the lock itself.
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    with pytest.raises(FitCalled):  # a new run gets past the lock and goes on to train
        run_training(load_run_config(cfg), verbose=0)
    with RunDirLock(str(run)) as lock:  # ... and released it when it stopped
        assert lock.holder()["pid"] == os.getpid()


# Blocks the first run after its first epoch (logged and backed up) until the test kills it.
_BLOCK_AFTER_FIRST_EPOCH = """
import tensorflow as tf
import tfrec_video.cli.train as train

class Block(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        open(os.environ["BLOCKED_FILE"], "w").close()
        while True:
            time.sleep(1)

_callbacks = train._callbacks
train._callbacks = lambda *args: _callbacks(*args) + [Block()]
"""


@pytest.mark.slow
def test_two_real_train_processes_one_fails_fast_then_a_new_run_resumes_after_kill_9(tmp_path, tiny):
    cfg = _config(tmp_path, tiny, epochs=3, export=False)
    run, blocked = tmp_path / "run", tmp_path / "blocked"
    first = _script(tmp_path, "first.py", _BLOCK_AFTER_FIRST_EPOCH) + ["--config", cfg, "--verbose", "2"]
    second = {}

    def ready():  # polled while the first run lives: it holds the lock, one epoch done
        if not blocked.exists():
            return False
        second["holder"] = json.loads((run / LOCK_FILE).read_text())
        second["config"] = (run / "config.yaml").read_bytes()
        started = time.time()
        second["result"] = subprocess.run([sys.executable, "-m", "tfrec_video", "train", "--config", cfg],
                                          capture_output=True, text=True, timeout=300, env=ENV)
        second["seconds"] = time.time() - started
        return True

    returncode, stderr = kill_when(first, ready, env=dict(ENV, BLOCKED_FILE=str(blocked)), deadline_s=400)
    assert returncode == -signal.SIGKILL, stderr[-3000:]
    result = second["result"]
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error_line(result.stderr)
    assert f"output_dir {run} is in use by another run (pid {second['holder']['pid']} on host" in line, line
    assert "first.py" in line  # the holder's command
    assert second["seconds"] < 120, second["seconds"]
    assert (run / "config.yaml").read_bytes() == second["config"]
    assert [row.split(",")[0] for row in (run / HISTORY_FILE).read_text().splitlines()] == ["epoch", "0"]

    # The first run died by kill -9: a new run into the directory proceeds, resuming its backup.
    result = subprocess.run([sys.executable, "-m", "tfrec_video", "train", "--config", cfg, "--verbose", "2"],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming the unfinished run" in result.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["resumed_from_epoch"] == 1 and len(report["training"]["history"]["loss"]) == 3
    assert [row.split(",")[0] for row in (run / HISTORY_FILE).read_text().splitlines()] == ["epoch", "0", "1", "2"]


# -- class 3: a kill after training, before the export -----------------------------------------------------


def test_a_finished_training_is_reused_only_for_the_same_config_and_data(tmp_path, tiny):
    cfg = _config(tmp_path, tiny)
    config = load_run_config(cfg)
    run, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    run.mkdir()
    fingerprint = training_fingerprint(config, resolve_data(config))
    write_trained(str(run), {"fingerprint": fingerprint, "training": {"epochs_run": 2}})
    assert reusable_training(str(run), fingerprint, str(model_dir)) == (None, (
        f"{run / TRAINED_FILE} names a trained model, but {model_dir} is missing"))
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    record, why_not = reusable_training(str(run), fingerprint, str(model_dir))
    assert why_not is None and record["training"] == {"epochs_run": 2}
    # Where results go and how the run is spread are not what the model is.
    moved = load_run_config(cfg, ["output_dir=elsewhere", "export.dir=other", "export.enabled=false",
                                  "strategy=mirrored", "callbacks.tensorboard=true"])
    assert training_fingerprint(moved, resolve_data(moved)) == fingerprint
    changed = load_run_config(cfg, ["model.embedding_dim=8", "training.epochs=3"])
    record, why_not = reusable_training(str(run), training_fingerprint(changed, resolve_data(changed)),
                                        str(model_dir))
    assert record is None and "model.embedding_dim 16 -> 8" in why_not and "training.epochs 2 -> 3" in why_not
    # Changed data: a training file rewritten since (its modification time moved).
    shutil.copytree(os.path.join(tiny[0], "train"), tmp_path / "train")
    copied = load_run_config(cfg, [f"data.train={tmp_path / 'train'}"])
    write_trained(str(run), {"fingerprint": training_fingerprint(copied, resolve_data(copied)), "training": {}})
    os.utime(sorted((tmp_path / "train").iterdir())[0], ns=(0, 0))
    record, why_not = reusable_training(str(run), training_fingerprint(copied, resolve_data(copied)),
                                        str(model_dir))
    assert record is None and why_not.startswith(f"the model in {model_dir} was trained from another config or "
                                                 "other data (files.train")


_KILL_AT_EXPORT = """
import tfrec_video.serving.export as export
export.export_saved_model = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
"""
# The rerun must not train; it exports, then is killed before the report.
_NO_FIT_KILL_AT_REPORT = """
import tfrec_video.training.fit as fit
import tfrec_video.evaluation.report as report

def fit_model(*args, **kwargs):
    raise AssertionError("trained again")

fit.fit_model = fit_model
report.write_report = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_run_killed_before_its_export_is_finished_without_training_again(tmp_path, tiny, no_fit, capsys):
    cfg = _config(tmp_path, tiny)
    run, versions = tmp_path / "run", tmp_path / "saved_models" / "video_rec"
    killed = subprocess.run(_script(tmp_path, "kill_at_export.py", _KILL_AT_EXPORT) + ["--config", cfg],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (run / TRAINED_FILE).exists() and (run / "model" / "model.json").exists()
    assert not (run / "report.json").exists() and not versions.exists()
    for copy in ("api", "changed"):
        shutil.copytree(run, tmp_path / copy)

    # Rerun 1 (a process): reuses the model, exports, and is killed before the report.
    rerun = subprocess.run(_script(tmp_path, "no_fit.py", _NO_FIT_KILL_AT_REPORT) + ["--config", cfg, "--verbose", "2"],
                           capture_output=True, text=True, timeout=600, env=ENV)
    assert rerun.returncode == -signal.SIGKILL, rerun.stderr[-3000:]
    assert "Reusing the model an earlier run trained" in rerun.stdout and "trained again" not in rerun.stderr
    assert sorted(os.listdir(versions)) == ["1"]
    assert json.loads((run / TRAINED_FILE).read_text())["export"]["path"] == str(versions / "1")

    # Rerun 2 (the CLI, in this process, fit_model raising): finishes the report, keeps the export.
    assert main(["train", "--config", cfg, "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "Reusing the model an earlier run trained" in out and f"Keeping the export the earlier run finished: " \
                                                                  f"{versions / '1'}" in out
    assert sorted(os.listdir(versions)) == ["1"] and (versions / "1" / "saved_model.pb").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["reused_trained_model"] is True and report["training"]["epochs_run"] == 2
    assert report["export"]["path"] == str(versions / "1") and len(report["training"]["history"]["loss"]) == 2
    # One row per epoch: nothing was trained twice.
    assert [row.split(",")[0] for row in (run / HISTORY_FILE).read_text().splitlines()] == ["epoch", "0", "1"]
    assert not (run / TRAINED_FILE).exists()  # complete: the next run starts from scratch

    # The Python API, on copies of the killed run: the same config reuses the model ...
    report = run_training(load_run_config(cfg, [f"output_dir={tmp_path / 'api'}", "export.enabled=false"]), verbose=0)
    assert report["training"]["reused_trained_model"] is True and len(report["training"]["history"]["loss"]) == 2
    # ... a changed one trains again, and says why.
    capsys.readouterr()
    with pytest.raises(FitCalled):
        run_training(load_run_config(cfg, [f"output_dir={tmp_path / 'changed'}", "model.embedding_dim=8"]))
    out = capsys.readouterr().out
    assert "Training again: the model in" in out and "model.embedding_dim 16 -> 8" in out
    assert not (tmp_path / "changed" / TRAINED_FILE).exists()
