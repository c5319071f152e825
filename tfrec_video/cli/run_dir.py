"""The directories a command writes: checked up front, one writer at a time, a finished training kept.

**Paths checked up front.** `check_output_dir` and `check_output_file` turn an
output path that cannot work (a regular file where a directory is wanted, a
directory where a file is wanted, a parent that is a file, a directory this
process may not write) into one `ConfigError` that names the path, before any
data is read or any model trained. Writability is tried, not inferred from the
mode bits: a probe file is created and removed in the directory (or in its
nearest existing parent), which also tells the truth for root, for ACLs and for
read-only mounts.

**One writer per run directory.** `RunDirLock(output_dir)` holds an exclusive
`fcntl.flock` on `output_dir/run.lock` while a `tfrec-video train` runs. A
second run into the same directory fails at once with a `RunDirBusy` error that
names the directory and the other process (pid, host, start time, command),
and touches none of the first run's files. The kernel drops the lock when its
process ends, however it ends (`kill -9` included), so a dead run never blocks
the next one. The file stays (deleting a lock file that another process has
open would let two processes lock two different files); it holds the live
holder's details, and is emptied on release.

**A finished training is kept** (`TRAINED_FILE`, `output_dir/trained.json`). Once
`model.fit` has ended and the model is saved, the run writes this record
atomically: the fingerprint of what the model was trained from, its history,
head selection, calibration and list blend. It is removed when the whole run
(evaluation, report, export) is done. A run killed in between (during the
evaluation or the export) and started again with the same config and the same
data files reuses the saved model and does only the remaining steps; an export
it had already finished is not repeated. When the config or the data changed,
the model no longer matches what was asked for, so the run says which field
changed and trains again from scratch, as a fresh run would. The fingerprint
leaves out where the results go and how the run is distributed
(`output_dir`, `strategy`, `export.dir`, `export.name`, `export.enabled`,
`export.keep_seen`) and the callbacks that only log (TensorBoard, projector,
checkpoints, backups): changing those reuses the model.
"""

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
import tempfile
from typing import Dict, Optional, Tuple

from tfrec_video.errors import ConfigError, DataValidationError, shorten

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there (the module docstring's guarantee is POSIX)
    fcntl = None

LOCK_FILE = "run.lock"
TRAINED_FILE = "trained.json"
TRAINED_FORMAT = "tfrec_video.trained/1"
# Callbacks that only write logs: a changed value does not change the trained model.
_LOGGING_CALLBACKS = ("checkpoint", "backup_every", "tensorboard", "projector", "projector_max_videos")

_log = logging.getLogger(__name__)


def _nearest_existing(path: str) -> str:
    parent = path
    while not os.path.lexists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return parent


def _probe(directory: str, what: str, path: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".tfrec-video-write-probe-", dir=directory)
    except OSError as error:
        raise ConfigError(f"{what} {path} is not writable: cannot create a file in {directory} "
                          f"({error.strerror or error}).") from None
    os.close(fd)
    os.remove(probe)


def check_output_dir(path: str, what: str) -> None:
    """Raises `ConfigError` unless `path` is, or can be created as, a directory this process can write.

    Nothing is created but a probe file, removed at once. Remote paths
    (`scheme://...`) are left to the writer.

    Args:
      path: the directory the command will write into.
      what: how the user gave it, for the message: `"output_dir"`, `"--export-dir"`.

    Raises:
      ConfigError: `path`, or a parent of it, is not a directory, or it is not writable.
    """
    path = os.fspath(path)
    if "://" in path:
        return
    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.exists(path):
        raise ConfigError(f"{what} {path} is a broken symbolic link (to {os.readlink(path)}).")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a file, not a directory: give a directory path.")
    parent = _nearest_existing(path)
    if not os.path.isdir(parent):
        raise ConfigError(f"{what} {path} cannot be created: {parent} is a file, not a directory.")
    _probe(parent, what, path)


def check_output_file(path: str, what: str) -> None:
    """Raises `ConfigError` unless `path` can be written as a file (it is not a directory; its folder is writable).

    Args:
      path: the file the command will write, e.g. `report.json`.
      what: how the user gave it, for the message: `"--report"`.

    Raises:
      ConfigError: `path` is a directory, or its folder cannot be written.
    """
    path = os.fspath(path)
    if "://" in path:
        return
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a directory, not a file: give a file path.")
    check_output_dir(os.path.dirname(path), f"the folder of {what}")


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lock (`RunDirLock`).

    Attributes:
      directory: the run directory.
      holder: what the holder wrote in the lock file (`pid`, `host`, `started`, `command`), `{}` if nothing yet.
    """

    def __init__(self, directory: str, holder: Dict):
        self.directory, self.holder = directory, holder
        if holder.get("pid"):
            command = str(holder.get("command", ""))
            command = command if len(command) <= 200 else command[:200] + "..."
            who = (f"pid {holder['pid']} on host {holder.get('host', '?')}, started {holder.get('started', '?')}, "
                   f"command: {command}")
        else:
            who = "a process that has not written its pid yet"
        super().__init__(f"output_dir {directory} is in use by another run ({who}). Wait for it to end or give "
                         f"another --output-dir; the lock ({os.path.join(directory, LOCK_FILE)}) is released when "
                         "that process exits.")


class RunDirLock:
    """An exclusive, crash-safe lock on a run directory (see the module docstring), usable as a context manager.

    Args:
      directory: the run directory (created when missing).

    Example:

    >>> with RunDirLock(tempfile.mkdtemp()) as lock:
    ...     lock.holder()["pid"] == os.getpid()
    True
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunDirLock":
        """Takes the lock or raises `RunDirBusy`; writes this process's pid, host, start time and command."""
        os.makedirs(self.directory, exist_ok=True)
        try:
            # No O_TRUNC: opening must not touch the details the current holder wrote.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(f"output_dir {self.directory} is not writable: cannot open {self.path} "
                              f"({error.strerror or error}).") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    # A file system without flock (some network mounts): run unlocked rather than not at all.
                    _log.warning("cannot lock %s (%s): nothing stops another run from writing to %s at the same "
                                 "time.", self.path, error.strerror or error, self.directory)
                else:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise RunDirBusy(self.directory, holder) from None
        self._fd = fd
        details = {"pid": os.getpid(), "host": socket.gethostname(),
                   "started": datetime.datetime.now().isoformat(timespec="seconds"),
                   "command": " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(details).encode("utf-8"), 0)
        return self

    def holder(self) -> Dict:
        """What the lock file says about its holder (this process's details while it holds the lock)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Empties the lock file and drops the lock (the process ending drops it too)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> Dict:
    try:
        text = os.pread(fd, 64 * 1024, 0).decode("utf-8", errors="replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_run_dir(directory: str, chief: bool = True):
    """`RunDirLock(directory)` for the chief; nothing for the other workers of a multi-worker run.

    The workers of one `multi_worker` run write into one `output_dir` on purpose
    (each non-chief worker into its own `workertemp_<id>`), so only the chief holds
    the lock, and a second run into the directory still meets it.
    """
    return RunDirLock(directory) if chief else contextlib.nullcontext()


class ResumeState:
    """What `tfrec-video train` needs to know about `fit` besides `History`: where it started, and that a
    resumed run adapted the vocabularies it started with.

    Attributes:
      first_epoch: the 0-based epoch `fit` started at (after a resume, the one it resumed).
      vocabulary_path: where the run keeps the vocabularies it started with.
      backup_dir: the `BackupAndRestore` directory (named in the refusal to resume).
      chief: whether this process writes the run's files.
      callback: the Keras callback that records all this.
    """

    def __init__(self, vocabulary_path: str, backup_dir: str, chief: bool = True):
        import tensorflow as tf

        class Recorder(tf.keras.callbacks.Callback):
            def __init__(self, state):
                super().__init__()
                self.state = state

            def on_epoch_begin(self, epoch, logs=None):
                if self.state.first_epoch is None:
                    self.state.first_epoch = epoch

            def on_train_begin(self, logs=None):
                self.state.check_vocabularies(self.model)

        self.first_epoch: Optional[int] = None
        self.vocabulary_path, self.backup_dir, self.chief = vocabulary_path, backup_dir, chief
        self.callback = Recorder(self)

    def check_vocabularies(self, model) -> None:
        """Raises `ConfigError` when a resumed run adapted other vocabularies; else records them (chief)."""
        # BackupAndRestore restores weights by position in the variables; vocabularies adapted from
        # changed data would silently mean other ids.
        current = json.dumps(model.vocabularies.to_dict(), sort_keys=True)
        run = os.path.dirname(self.vocabulary_path)
        if os.path.exists(self.vocabulary_path):
            with open(self.vocabulary_path, encoding="utf-8") as f:
                if f.read() != current:
                    raise ConfigError(
                        f"cannot resume the unfinished run in {run}: the vocabularies adapted from the data differ "
                        "from the ones it started with (the training files or the model config changed). Delete "
                        f"{self.backup_dir} to start over.")
            return
        if not self.chief:
            return
        with open(self.vocabulary_path + ".tmp", "w", encoding="utf-8") as f:
            f.write(current)
        os.replace(self.vocabulary_path + ".tmp", self.vocabulary_path)


# -- a finished training ----------------------------------------------------------------------------------


def training_fingerprint(config, data: Dict) -> Dict:
    """What a trained model depends on: the run config less where results go, and the training files' stats.

    Args:
      config: the `RunConfig`.
      data: the run's resolved files (`tfrec_video.cli.train.resolve_data`).

    Returns:
      A JSON-able dict; two runs whose fingerprints are equal train the same model.
    """
    from tfrec_video import __version__

    values = config.to_dict()
    for key in ("output_dir", "strategy"):
        values.pop(key)
    values["data"].pop("test")  # the test split is read after training, by the evaluation this run redoes
    values["export"] = {k: values["export"][k] for k in ("k", "n")}  # fit_model fits the served list to them
    values["callbacks"] = {k: v for k, v in values["callbacks"].items() if k not in _LOGGING_CALLBACKS}
    values["version"] = __version__
    values["files"] = {name: _file_stats(data.get(name)) for name in ("catalog", "train", "validation", "embeddings")}
    if config.warm_start_from is not None:  # the parent model: retrained in place, it is another start
        parent = os.path.join(config.warm_start_from, "model.json")
        values["files"]["warm_start_from"] = [parent, os.stat(parent).st_mtime_ns] if os.path.exists(parent) else None
    return json.loads(json.dumps(values))


def _file_stats(paths):
    if paths is None:
        return None
    from tfrec_video.data.files import is_local, list_files

    try:
        files = list_files(paths)
    except DataValidationError as error:
        return f"unreadable: {error}"
    stats = []
    for name in files:
        if is_local(name):
            stat = os.stat(name)
            stats.append([os.path.abspath(name), stat.st_size, stat.st_mtime_ns])
        else:
            stats.append([name])
    return stats


def _differences(old, new, prefix: str = "") -> list:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix[:-1]} {shorten(old, 60)} -> {shorten(new, 60)}"]


def read_trained(directory: str) -> Optional[Dict]:
    """The finished-training record in `directory`, None when there is none or it is unreadable."""
    path = os.path.join(directory, TRAINED_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == TRAINED_FORMAT else None


def reusable_training(directory: str, fingerprint: Dict, model_dir: str) -> Tuple[Optional[Dict], Optional[str]]:
    """The record of a finished training in `directory` that this run may reuse, or why not.

    Args:
      directory: the run directory.
      fingerprint: this run's `training_fingerprint`.
      model_dir: where the trained model was saved.

    Returns:
      `(record, None)` to reuse; `(None, reason)` when there is a record that
      does not fit (the reason says which fields changed); `(None, None)` when
      there is no record.
    """
    record = read_trained(directory)
    if record is None:
        return None, None
    if not os.path.isfile(os.path.join(model_dir, "model.json")):
        return None, f"{os.path.join(directory, TRAINED_FILE)} names a trained model, but {model_dir} is missing"
    changed = _differences(record.get("fingerprint"), fingerprint)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return None, (f"the model in {model_dir} was trained from another config or other data "
                      f"({'; '.join(changed[:3])}{more})")
    return record, None


def write_trained(directory: str, record: Dict) -> str:
    """Writes the finished-training record atomically (a temporary file renamed over it); returns its path."""
    path = os.path.join(directory, TRAINED_FILE)
    record = dict(record, format=TRAINED_FORMAT)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def forget_trained(directory: str) -> None:
    """Removes the finished-training record: the run is complete, or it trains again."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, TRAINED_FILE))
