"""Version directories of an export: readable by TF Serving, safe with concurrent writers, no stale leftovers.

`export_saved_model` writes each version into a hidden temporary directory beside
the numeric ones (TF Serving ignores names that are not numbers) and renames it
into place; this module holds the file-system half of that:

* **Permissions.** `tempfile.mkdtemp` makes mode 0700 directories, and a rename
  keeps the mode, so a `tensorflow_model_server` running as its own service user
  could not read the version ("SavedModel file does not exist"). The temporary
  directory is made with `os.mkdir` (which follows the umask) and
  `data.files.follow_umask` sets every directory of the version to `0o777 & ~umask` and
  every file to `0o666 & ~umask` (0755 / 0644 under umask 022) before the rename.
* **Concurrent writers.** Two exporters into one model directory may both pick
  the same next version. `publish` renames the temporary directory into place;
  a rename onto a non-empty directory fails atomically, so when another writer
  took the number first, the next free number is taken instead. Both exports
  succeed, with distinct versions; a version given explicitly is never
  overwritten (`FileExistsError`). A version derived from another (a catalog
  refresh: version N's weights) is published at its fixed number, right above
  N (`newer_versions`): taking the next free number above a concurrent export's
  version would serve the older weights as the newest.
* **Stale temporary directories.** A temporary directory is named
  `.tmp-<version>-<host>-pid<pid>-<token>`: the writer's host and process id. A
  writer that was killed (SIGKILL, power loss) leaves its directory behind;
  `remove_stale_temp_dirs`, run by every export, deletes those whose process is
  gone (same host, pid not running, or reused by a process that started after
  the directory was last written), keeps those of live writers, and logs the
  ones it cannot judge (another host's, or an older naming) without touching them.

Example:

    tmp = make_temp_dir(model_dir, next_version(model_dir))
    ...  # write the SavedModel into tmp
    follow_umask(tmp)
    version_dir = publish(tmp, model_dir, version)
"""

import errno
import logging
import os
import re
import secrets
import shutil
import socket
from typing import List, Optional, Tuple

import tensorflow as tf

_log = logging.getLogger("tfrec_video.export")

TEMP_PREFIX = ".tmp-"
_VERSION = re.compile(r"^\d+$")
_TEMP = re.compile(r"^\.tmp-(?P<version>\d+)-(?P<host>.*)-pid(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")
# Renames tried before giving up: each retry takes the highest version present + 1, so only a flood of
# concurrent writers could use these up.
MAX_PUBLISH_ATTEMPTS = 100


def _numbered_versions(model_dir: str) -> List[int]:
    """The numeric version directories under `model_dir`, highest first (none when it is no directory)."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    return sorted((int(d.rstrip("/")) for d in tf.io.gfile.listdir(model_dir) if _VERSION.match(d.rstrip("/"))),
                  reverse=True)


def next_version(model_dir: str) -> int:
    """One more than the highest numeric version under `model_dir` (1 when there is none)."""
    return max(_numbered_versions(model_dir), default=0) + 1


def latest_version(model_dir: str) -> Optional[int]:
    """The highest numeric version under `model_dir` that holds a SavedModel (what TF Serving serves), or
    None when there is none (no directory, no version, or only versions without `saved_model.pb`)."""
    return _servable(model_dir, _numbered_versions(model_dir))


def newer_versions(model_dir: str, version: int) -> Tuple[Optional[int], int]:
    """What lies above `version` in `model_dir`, from one listing of it.

    A writer that derives a version from another (`serving.refresh`: version N's weights, a new catalog)
    must publish it right above N, and only while nothing newer is served: a version published above a
    newer one would be served in its place (a rollback).

    Args:
      model_dir: a model directory (`saved_models/<name>`).
      version: the version the writer read.

    Returns:
      `(newer, next)`: the highest version above `version` that holds a SavedModel (None when there is
      none), and the version to publish: `version + 1`, or one past numbered directories above it that
      hold no SavedModel (strays TF Serving cannot load; never taken over).
    """
    versions = _numbered_versions(model_dir)
    above = [v for v in versions if v > version]
    return _servable(model_dir, above), max(above, default=version) + 1


def _servable(model_dir: str, versions: List[int]) -> Optional[int]:
    """The first of `versions` (highest first) whose directory holds a SavedModel, or None."""
    return next((v for v in versions if tf.saved_model.contains_saved_model(os.path.join(model_dir, str(v)))), None)


def _host() -> str:
    # Only characters that keep the name a plain, portable directory name.
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def temp_dir_name(version: int, pid: Optional[int] = None, host: Optional[str] = None) -> str:
    """The name of a temporary version directory: `.tmp-<version>-<host>-pid<pid>-<token>`.

    Args:
      version: the version it is meant to become (informative: `publish` may take another).
      pid: the writing process (default: this one).
      host: the writing host (default: this one).

    Returns:
      A name no other writer uses (it ends in a random token).
    """
    return (f"{TEMP_PREFIX}{int(version)}-{_host() if host is None else host}-"
            f"pid{os.getpid() if pid is None else int(pid)}-{secrets.token_hex(4)}")


def make_temp_dir(model_dir: str, version: int) -> str:
    """Creates and returns a new temporary version directory in `model_dir`, with the umask's mode."""
    while True:
        path = os.path.join(model_dir, temp_dir_name(version))
        try:
            os.mkdir(path)  # 0o777 & ~umask, unlike tempfile.mkdtemp's 0700
            return path
        except FileExistsError:  # a random token taken already: draw another
            continue


def publish(tmp: str, model_dir: str, version: int, fixed: bool = False) -> str:
    """Renames the finished temporary directory `tmp` to `model_dir/<version>` and returns that path.

    Args:
      tmp: the finished temporary version directory (in `model_dir`).
      model_dir: the model directory TF Serving polls.
      version: the version to take.
      fixed: the caller asked for this very version: never take another.

    Returns:
      The version directory: `version`'s, or, when another writer took that number
      first (and not `fixed`), the next free one's.

    Raises:
      FileExistsError: `fixed` and the version exists.
    """
    for _ in range(MAX_PUBLISH_ATTEMPTS):
        final = os.path.join(model_dir, str(version))
        # A rename onto an existing *empty* directory would replace it: an existing path is never a target.
        if not os.path.lexists(final):
            try:
                os.rename(tmp, final)
                return final
            except OSError as error:  # another writer renamed its version into place in between
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        if fixed:
            raise FileExistsError(f"export: {final} already exists; versions are never overwritten.")
        version = max(version + 1, next_version(model_dir))
    raise FileExistsError(f"export: no free version in {model_dir} after {MAX_PUBLISH_ATTEMPTS} attempts "
                          "(other exports keep taking them).")


def _process_start(pid: int) -> Optional[float]:
    """The start time (seconds since the epoch) of process `pid`, where /proc tells it; else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_gone(pid: int, written: float) -> bool:
    """Whether process `pid` of this host cannot be the writer of a directory last written at `written`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return False
    start = _process_start(pid)
    # The pid was reused: its process started after the directory was last written, so it never wrote it.
    # (1 s of slack: the boot time is whole seconds.)
    return start is not None and start > written + 1.0


def remove_stale_temp_dirs(model_dir: str) -> Tuple[List[str], List[str]]:
    """Deletes the temporary version directories in `model_dir` whose writer process is gone.

    A live writer's directory is kept. Directories this cannot judge (written on
    another host, or named by an older tfrec_video without the writer's pid) are
    kept and logged as a warning, with how to remove them.

    Args:
      model_dir: a model directory (`saved_models/<name>`); a missing one holds nothing.

    Returns:
      `(removed, unjudged)`: the paths deleted and the paths left for the user to check.
    """
    removed, unjudged = [], []
    try:
        entries = sorted(os.listdir(model_dir))
    except OSError:
        return removed, unjudged
    host = _host()
    for entry in entries:
        path = os.path.join(model_dir, entry)
        if not entry.startswith(TEMP_PREFIX) or not os.path.isdir(path) or os.path.islink(path):
            continue
        match = _TEMP.match(entry)
        if match is None or match["host"] != host:
            unjudged.append(path)
            continue
        try:
            written = os.stat(path).st_mtime
        except OSError:  # removed meanwhile (another export cleaning up, or its writer finishing)
            continue
        if _writer_gone(int(match["pid"]), written):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in removed:
        _log.warning("export: removed %s, the temporary directory of an export whose process is gone "
                     "(killed before it finished).", path)
    if unjudged:
        _log.warning("export: %s: temporary export director%s of another host or an older tfrec_video; if no "
                     "export into %s is running, delete %s.", ", ".join(unjudged),
                     "y" if len(unjudged) == 1 else "ies", model_dir, "it" if len(unjudged) == 1 else "them")
    return removed, unjudged
