"""The Optuna study behind `tfrec-video tune`: its storage, trials left behind by dead processes, its summary.

**Storage.** A study lives in an Optuna `RDBStorage`: by default
`sqlite:///<output_dir>/study.db`, or any RDB URL (`postgresql://...`,
`mysql://...`) that several processes or machines share. Trials are counted
in the database, not in a process, so N processes may run one study at once and
a restarted process picks up where the study stands.

**Trials of dead processes.** A process killed with `kill -9` (or a lost
machine) leaves its trial RUNNING in the storage. Such a trial must neither
count as done nor block the study, so two mechanisms mark it FAIL:

1. *Its own machine knows at once.* Each trial records its owner when it
   starts (`claim_trial`: the machine, the process id and the process's start
   time). `fail_dead_trials`, run by `tfrec-video tune` before every trial it
   starts, fails each RUNNING trial whose owner is this machine and whose
   process is gone (no such pid, or a pid reused by a process that started
   later). So a single process resumed after `kill -9` fails the trial it was
   killed in immediately, with no grace period to wait. The machine is the
   host name, the boot id and the pid namespace, so containers that share a
   host name but not their processes never judge each other's trials.
2. *Other machines wait for the heartbeat.* While a trial runs, Optuna's
   heartbeat thread stamps it every `heartbeat_interval` seconds; a trial
   whose stamp is older than `grace_period` is failed by Optuna's
   `fail_stale_trials`, which every process calls before it starts a trial.
   This also covers the one case the first cannot: a process killed in the
   milliseconds between Optuna creating its trial and `claim_trial`.

Either way the failed trial is then retried once (Optuna's
`RetryHeartbeatStaleTrialCallback`): a WAITING copy with the same parameters
(Optuna records the original's number in its `failed_trial` system attribute),
which the next trial any process starts takes up, in a fresh directory. A
trial that fails by raising is not retried.

**Summary.** `trial_rows` and `plot_trials` turn the study into the rows of
`tune_report.json` and the `trials.png` figure.

Example:

>>> study = open_study("runs/tune", TuneConfig(trials=10))           # doctest: +SKIP
>>> fail_dead_trials(study)                                         # doctest: +SKIP
[3]
>>> trial_counts(study)["complete"]                                 # doctest: +SKIP
3
"""

import contextlib
import copy
import math
import os
import socket
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

from tfrec_video.errors import ConfigError
from tfrec_video.training.search_space import TuneConfig

# The user attribute a trial's owning process is recorded in.
OWNER_ATTR = "tfrec_video_owner"
STATES = ("complete", "pruned", "fail", "running", "waiting")


def default_storage(output_dir: str) -> str:
    """`sqlite:///<output_dir>/study.db`, with an absolute path."""
    return f"sqlite:///{os.path.join(os.path.abspath(output_dir), 'study.db')}"


@contextlib.contextmanager
def _quiet_experimental():
    # Heartbeats and the retry callback are marked experimental in Optuna (since 2.8/2.9), and say so on use.
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _retry():
    import optuna

    with _quiet_experimental():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


def _storage(url: str, tune: TuneConfig):
    import optuna

    kwargs = {}
    if url.startswith("sqlite"):
        # Processes sharing one SQLite file wait for each other's writes instead of failing at once.
        kwargs = {"connect_args": {"timeout": 60}}
    with _quiet_experimental():
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=tune.heartbeat_interval,
                                          grace_period=tune.grace_period, heartbeat_stale_trial_callback=_retry())


def open_study(output_dir: str, tune: TuneConfig, pruner=None):
    """Creates the study, or loads it when its storage already holds it (`load_if_exists`).

    Args:
      output_dir: the tune's directory (the default SQLite file and study name come from it).
      tune: the `TuneConfig` (storage, study name, direction, pruner).
      pruner: an Optuna pruner to use instead of the one `tune.pruner` names.

    Returns:
      The `optuna.Study`. Its sampler is set per trial by `tfrec-video tune`.

    Raises:
      ConfigError: the stored study was created for another objective or direction.
    """
    import optuna

    url = tune.storage or default_storage(output_dir)
    name = tune.study_name or os.path.basename(os.path.abspath(output_dir))
    if pruner is None:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                              n_warmup_steps=tune.pruner_warmup_epochs + 1)
                  if tune.pruner == "median" else optuna.pruners.NopPruner())
    os.makedirs(output_dir, exist_ok=True)
    study = optuna.create_study(storage=_storage(url, tune), study_name=name, direction=tune.direction,
                                pruner=pruner, load_if_exists=True)
    stored = study.user_attrs.get("objective")
    if stored is None:
        study.set_user_attr("objective", tune.objective)
    elif stored != tune.objective or study.direction.name.lower() != tune.direction:
        raise ConfigError(f"the study {name!r} in {url} tunes {stored!r} ({study.direction.name.lower()}), not "
                          f"{tune.objective!r} ({tune.direction}): use another --study-name or --output-dir.")
    return study


def _machine() -> str:
    """This machine and pid namespace: a pid means the same process only when this matches."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    return "/".join(parts)


def _started(pid: int) -> Optional[str]:
    """The start time of process `pid` (clock ticks since boot, Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def claim_trial(trial) -> None:
    """Records this process as the owner of `trial` (see the module docstring), before it trains."""
    trial.set_user_attr(OWNER_ATTR, {"trial": trial.number, "machine": _machine(), "pid": os.getpid(),
                                     "started": _started(os.getpid())})


def _is_dead(owner: Mapping, number: int) -> bool:
    # A retried trial inherits its original's user attributes: only an owner recorded for this number counts.
    if not isinstance(owner, Mapping) or owner.get("trial") != number or owner.get("machine") != _machine():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = _started(pid)
    return started is not None and owner.get("started") is not None and started != owner["started"]


def fail_dead_trials(study) -> List[int]:
    """Marks FAIL the RUNNING trials of dead processes (see the module docstring) and retries each once.

    Returns:
      The numbers of the trials this call failed.
    """
    import optuna
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(trial.user_attrs.get(OWNER_ATTR), trial.number):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed it first, and retried it
        failed.append(trial.number)
        with _quiet_experimental():
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            _retry()(study, copy.deepcopy(frozen))
    with _quiet_experimental():
        optuna.storages.fail_stale_trials(study)  # other machines' dead trials, by their heartbeat
    return failed


def trial_counts(study) -> Dict[str, int]:
    """`{"complete", "pruned", "fail", "running", "waiting": count}` of the study's trials."""
    counts = dict.fromkeys(STATES, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def trial_rows(study, decode=lambda params: params) -> List[dict]:
    """One plain dict per trial: number, state, value, the epoch values reported, params, attributes.

    Args:
      study: the `optuna.Study`.
      decode: maps a trial's Optuna params to field values (`search_space.sampled_values`).
    """
    rows = []
    for trial in study.get_trials(deepcopy=False):
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append({
            "number": trial.number, "state": trial.state.name, "value": trial.value,
            "epoch_values": [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)],
            "params": decode(dict(trial.params)),
            "best_epoch": trial.user_attrs.get("best_epoch"), "epochs": trial.user_attrs.get("epochs"),
            "directory": trial.user_attrs.get("directory"),
            "retry_of": trial.system_attrs.get("failed_trial"),
            "duration_s": None if duration is None else round(duration, 1),
        })
    return rows


def plot_trials(rows: Sequence[Mapping], objective: str, direction: str, path: str) -> str:
    """`trials.png`: each trial's value by trial number, pruned trials at their last epoch value, and the best so far.

    Args:
      rows: `trial_rows` output.
      objective: the metric's name (the y axis).
      direction: `"maximize"` or `"minimize"` (how the best-so-far line moves).
      path: the PNG to write (atomically, like the run's other plots).

    Returns:
      `path`.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    def finite(v):
        return v is not None and math.isfinite(v)

    complete = [(r["number"], r["value"]) for r in rows if r["state"] == "COMPLETE" and finite(r["value"])]
    pruned = [(r["number"], r["epoch_values"][-1]) for r in rows
              if r["state"] == "PRUNED" and r["epoch_values"] and finite(r["epoch_values"][-1])]
    figure, axes = plt.subplots(figsize=(7, 4))
    if complete:
        axes.scatter(*zip(*complete), color="tab:blue", label="complete (best epoch)", zorder=3)
        best, steps = None, []
        for number, value in sorted(complete):
            if best is None or (value > best if direction == "maximize" else value < best):
                best = value
            steps.append((number, best))
        axes.step(*zip(*steps), where="post", color="tab:orange", label="best so far")
    if pruned:
        axes.scatter(*zip(*pruned), marker="x", color="tab:gray", label="pruned (last epoch)", zorder=3)
    axes.set_xlabel("trial")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # trial numbers, not 0.2 steps
    axes.set_ylabel(objective)
    axes.set_title(f"{objective} per trial ({direction})")
    if complete or pruned:
        axes.legend(loc="best")
    axes.grid(alpha=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(tmp, path)
    return path
