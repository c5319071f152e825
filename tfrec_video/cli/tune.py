"""`tfrec-video tune --config cfg.yaml --trials N` (also `python -m tfrec_video tune`): a hyper-parameter search.

An Optuna study over `ModelConfig` and `TrainingConfig` fields (the config
file's `tune:` section, `tfrec_video.training.search_space`): a seeded TPE
sampler proposes each trial's values, a median pruner stops trials whose
per-epoch validation metric falls behind, and the study lives in a database,
so the search survives its process.

**A trial** is one `run_training` of the file's run with the trial's values
set, in `output_dir/trials/<number>/` (its `history.csv`, `report.json`,
TensorBoard logs, ...). Every trial trains and validates on the same data as
the run, with no export, no embedding projector and no test split (the test
split is for the chosen model, not for choosing it; a built-in dataset is
passed to the trials as its files for this). `TrialPruning` reports the
objective after each epoch; the trial's value is its best epoch's.

**Resuming.** The study's storage (`--storage`, default
`sqlite:///<output_dir>/study.db`) holds every trial. Each start counts the
study's COMPLETE and PRUNED trials towards `--trials N` (and those RUNNING in
other live processes) and runs only the rest, so the same command after a
crash or a `kill -9` goes on without repeating a finished trial. The trial the
killed process was running stays RUNNING in the storage; the restarted process
marks it FAIL before its first trial (it knows the dead process by its pid; a
process on another machine waits for the trial's heartbeat to go stale) and
runs its values once more as a new trial (`tfrec_video.training.study`). FAIL
trials never count. Each trial's sampler is seeded with the seed plus the
number of trials before it, so a restarted process does not draw the first
values of the study again.

**Several processes or machines** share a study by passing the same
`--storage` URL (e.g. `postgresql://user@host/db`) and `--study-name`; each
runs trials until the study holds N.

**Output directory.**

    output_dir/
      study.db            the study (default storage)
      trials/<number>/    each trial's run
      best_config.yaml    the run config with the best trial's values (`tfrec-video train --config` it)
      trials.png          the objective per trial and the best so far
      tune_report.json    best value and values, counts per state, every trial

Example:

    tfrec-video tune --config cfg.yaml --trials 30
    tfrec-video train --config runs/tune/best_config.yaml
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
import urllib.parse
from typing import Dict, List, Optional

from tfrec_video.config_fields import in_file, read_config
from tfrec_video.errors import ConfigError, shorten
from tfrec_video.training.run_config import DataConfig, RunConfig, dump_run_config, load_run_config
from tfrec_video.training.search_space import (TuneConfig, check_space, sampled_values, tune_config_from_dict,
                                               with_values)

TRIALS_DIR = "trials"
BEST_CONFIG = "best_config.yaml"
PLOT = "trials.png"
REPORT = "tune_report.json"
# Which study an output directory's trials/ belong to: trial numbers are only unique within a study.
STUDY_MARKER = "study.json"


def _trial_data(config: RunConfig) -> DataConfig:
    """The trials' data: the run's files with no test split (a built-in dataset as its files)."""
    if config.data.builtin is None:
        return dataclasses.replace(config.data, test=None)
    if config.data.days is not None:
        raise ConfigError("tfrec-video tune searches on the built-in dataset's train and validation splits: remove "
                          "data.days (a daily job's window) from the config it tunes.")
    # The split directories and widths `train` resolves for the dataset: one definition of them.
    from tfrec_video.cli.train import resolve_data

    resolved = resolve_data(config)
    catalog, impressions = resolved["catalog_schema"], resolved["impressions_schema"]
    return DataConfig(catalog=resolved["catalog"], train=resolved["train"], validation=resolved["validation"],
                      embeddings=resolved["embeddings"], history_length=impressions["history"].length,
                      image_dim=catalog["image_embedding"].length, audio_dim=catalog["audio_embedding"].length)


def _recall_k(objective: str) -> Optional[int]:
    suffix = objective[len("val_recall_at_"):] if objective.startswith("val_recall_at_") else ""
    return int(suffix) if suffix.isdigit() and int(suffix) > 0 else None


def trial_base_config(config: RunConfig, tune: TuneConfig) -> RunConfig:
    """The run every trial starts from: `config` on its validation data, no test split, export or projector.

    When the objective is a `val_recall_at_K` no callback of the run computes, `callbacks.recall_k`
    becomes K, so the metric is in the logs.

    Raises:
      ConfigError: a validation objective without validation data, or a multi-worker strategy.
    """
    if config.strategy == "multi_worker":
        raise ConfigError("tfrec-video tune trains each trial on one machine (strategy default or mirrored); "
                          "to use several machines, run tune on each with one shared --storage.")
    data = _trial_data(config)
    if tune.objective.startswith("val_") and data.validation is None:
        raise ConfigError(f"tune.objective {shorten(tune.objective)} is a validation metric, and the run has no "
                          "validation data: set data.validation.")
    callbacks = dataclasses.replace(config.callbacks, projector=False)
    k = _recall_k(tune.objective)
    training = config.training
    computed = {callbacks.recall_k, callbacks.monitored_recall_k(), training.selection_recall_k
                if training.select_heads else None}
    if k is not None and k not in computed:
        callbacks = dataclasses.replace(callbacks, recall_k=k)
    return dataclasses.replace(config, data=data, callbacks=callbacks,
                               export=dataclasses.replace(config.export, enabled=False))


def _safe_url(url: str) -> str:
    """The storage URL without its password, for printing and reports."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _claim_directory(out: str, study_name: str) -> None:
    path = os.path.join(out, STUDY_MARKER)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            owner = json.load(f).get("study_name")
        if owner != study_name:
            raise ConfigError(f"{out} holds the trials of the study {owner!r}, not {study_name!r}: use another "
                              "--output-dir (trial directories are numbered per study).")
        return
    tmp = f"{path}.{os.getpid()}.tmp"  # processes sharing the directory may write it at the same time
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"study_name": study_name}, f)
    os.replace(tmp, path)


def _short(values: Dict[str, object]) -> str:
    def text(v):
        return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)

    return " ".join(f"{k.split('.', 1)[1]}={text(v)}" for k, v in values.items())


def run_tune(config: RunConfig, tune: TuneConfig, verbose: int = 1, pruner=None) -> dict:
    """Runs the search until the study holds `tune.trials` COMPLETE or PRUNED trials, and writes its outputs.

    Args:
      config: the run to tune, with resolved paths (`load_run_config`); its `output_dir` is the tune's.
      tune: the `TuneConfig`.
      verbose: 0 silent, 1 one line per trial, 2 also each trial's Keras epoch lines.
      pruner: an Optuna pruner instead of the one `tune.pruner` names (tests use one that always prunes).

    Returns:
      The report also written to `output_dir/tune_report.json`.

    Raises:
      ConfigError: a bad space or objective, a study of another objective, or an objective missing
        from the epoch logs (raised by the first trial).
    """
    import optuna

    base = trial_base_config(config, tune)
    check_space(tune, base)
    # One line per trial of our own instead of Optuna's log (whose failed-trial warning repeats the traceback
    # of an error the command reports anyway); restored on the way out, for callers in the same process.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return _search(config, tune, base, verbose, pruner)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search(config: RunConfig, tune: TuneConfig, base: RunConfig, verbose: int, pruner) -> dict:
    """`run_tune` once the run and the space are checked: the trial loop, then the outputs."""
    import optuna
    import tensorflow as tf

    from tfrec_video.cli.train import run_training
    from tfrec_video.training.pruning import TrialPruning, best_value
    from tfrec_video.training.study import claim_trial, default_storage, fail_dead_trials, open_study, trial_counts

    say = print if verbose else (lambda *a, **k: None)
    out = config.output_dir
    study = open_study(out, tune, pruner)
    _claim_directory(out, study.study_name)
    url = _safe_url(tune.storage or default_storage(out))
    failed_before = fail_dead_trials(study)
    counts = trial_counts(study)
    say(f"Study {study.study_name!r} in {url}: {counts['complete'] + counts['pruned']} of {tune.trials} trials "
        f"done, {tune.direction} {tune.objective}" +
        (f"; trial(s) {failed_before} of a dead process marked FAIL" if failed_before else ""))

    def objective(trial):
        claim_trial(trial)
        values = {param.key: param.suggest(trial) for param in tune.params}
        directory = os.path.join(out, TRIALS_DIR, str(trial.number))
        if os.path.exists(directory):
            shutil.rmtree(directory)  # a number is new to a study: a leftover, which must not be resumed
        trial.set_user_attr("directory", directory)
        run = with_values(dataclasses.replace(base, output_dir=directory), values)
        pruning = TrialPruning(trial, tune.objective)
        try:
            report = run_training(run, verbose=2 if verbose >= 2 else 0, extra_callbacks=[pruning])
        except optuna.TrialPruned:
            trial.set_user_attr("epochs", len(pruning.values))
            raise
        finally:
            tf.keras.backend.clear_session()  # each trial builds a new model: free the last one's graph
        history = report["training"]["history"].get(tune.objective) or pruning.values
        value, epoch = best_value(history, tune.direction)
        trial.set_user_attr("epochs", len(history))
        trial.set_user_attr("best_epoch", epoch)
        return float("nan") if value is None else value  # NaN: Optuna records the trial as FAIL

    ran: List[int] = []
    states: List[str] = []

    def after(study, trial):
        ran.append(trial.number)
        states.append(trial.state.name)
        value = "" if trial.value is None else f" {tune.objective}={trial.value:.4f}"
        if trial.state.name == "FAIL":
            value = f" (no finite {tune.objective} in any epoch)"
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            last = max(trial.intermediate_values)
            value = f" {tune.objective}={trial.intermediate_values[last]:.4f} at epoch {last}"
        say(f"trial {trial.number:>3} {trial.state.name:<8}{value}  "
            f"{_short(sampled_values(tune.params, trial.params))}")

    start = time.time()
    while True:
        failed_before += fail_dead_trials(study)
        counts = trial_counts(study)
        if counts["complete"] + counts["pruned"] + counts["running"] >= tune.trials:
            break
        if states.count("FAIL") >= tune.trials:
            say(f"stopping: {states.count('FAIL')} trials of this run failed (a NaN objective each)")
            break
        # Seeded by where the study stands: a restarted process does not replay the first process's draws.
        study.sampler = optuna.samplers.TPESampler(seed=tune.seed + len(study.get_trials(deepcopy=False)),
                                                   n_startup_trials=tune.random_trials)
        study.optimize(objective, n_trials=1, gc_after_trial=True, callbacks=[after])
    this_run = {"trials_run": ran, "dead_trials_failed": failed_before, "seconds": round(time.time() - start, 1)}
    report = write_outputs(study, config, tune, this_run, url)
    say("\n" + format_report(report))
    return report


def write_outputs(study, config: RunConfig, tune: TuneConfig, this_run: dict, url: str) -> dict:
    """Writes `best_config.yaml`, `trials.png` and `tune_report.json` for the study as it stands.

    Args:
      study: the `optuna.Study`.
      config: the tuned run (the best config is it with the best trial's values and
        `output_dir/best` as its own output directory).
      tune: the `TuneConfig`.
      this_run: what this process did (`trials_run`, `dead_trials_failed`, `seconds`).
      url: the storage URL as reported (no password).

    Returns:
      The report.
    """
    from tfrec_video.training.study import plot_trials, trial_counts, trial_rows

    out = config.output_dir
    rows = trial_rows(study, decode=lambda params: sampled_values(tune.params, params))
    for row in rows:
        row["value"] = row["value"] if row["value"] is None or math.isfinite(row["value"]) else None
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    best = None
    if complete:
        pick = max if tune.direction == "maximize" else min
        row = pick(complete, key=lambda r: r["value"])  # the first of equal values
        path = dump_run_config(with_values(dataclasses.replace(config, output_dir=os.path.join(out, "best")),
                                           row["params"]), os.path.join(out, BEST_CONFIG))
        best = {"trial": row["number"], "value": row["value"], "epoch": row["best_epoch"], "params": row["params"],
                "directory": row["directory"], "config": path}
    report = {
        "study_name": study.study_name, "storage": url, "objective": tune.objective, "direction": tune.direction,
        "trials_requested": tune.trials, "counts": trial_counts(study), "best": best,
        "plot": plot_trials(rows, tune.objective, tune.direction, os.path.join(out, PLOT)),
        "report": os.path.join(out, REPORT), "this_run": this_run, "tune": tune.to_dict(), "trials": rows,
    }
    with open(report["report"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, allow_nan=False)
    os.replace(report["report"] + ".tmp", report["report"])
    return report


def format_report(report: dict, limit: int = 10) -> str:
    """The end-of-run summary: counts, then the best `limit` trials (complete first) with their values."""
    counts = report["counts"]
    lines = [(f"{report['study_name']}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} "
              f"failed, {counts['running']} running ({report['trials_requested']} requested); this run: "
              f"{len(report['this_run']['trials_run'])} trial(s)")]
    sign = -1 if report["direction"] == "maximize" else 1
    complete = sorted((r for r in report["trials"] if r["state"] == "COMPLETE" and r["value"] is not None),
                      key=lambda r: (sign * r["value"], r["number"]))
    shown = (complete + [r for r in report["trials"] if r["state"] == "PRUNED"])[:limit]
    if shown:
        keys = list(shown[0]["params"])
        names = [k.split(".", 1)[1] for k in keys]
        lines.append(f"{'trial':>5}  {'state':<8}  {report['objective']:>{max(10, len(report['objective']))}}  "
                     f"{'epoch':>5}  " + "  ".join(names))
        for r in shown:
            value = "" if r["value"] is None else f"{r['value']:.4f}"
            cells = [f"{r['params'].get(k)!s:>{len(n)}}" if not isinstance(r["params"].get(k), float)
                     else f"{r['params'][k]:>{len(n)}.3g}" for k, n in zip(keys, names)]
            lines.append(f"{r['number']:>5}  {r['state']:<8}  {value:>{max(10, len(report['objective']))}}  "
                         f"{r['best_epoch'] or '':>5}  " + "  ".join(cells))
    best = report["best"]
    lines.append(f"best: trial {best['trial']}, {report['objective']} {best['value']:.4f} -> {best['config']}"
                 if best else "no trial completed: no best config yet")
    lines.append(f"report: {report['report']}, plot: {report['plot']}")
    return "\n".join(lines)


def tune_config_from_args(args, base: Optional[RunConfig] = None) -> TuneConfig:
    """The `TuneConfig` of parsed arguments: the file's `tune:` section, then the flags.

    Args:
      args: the parsed `tfrec-video tune` arguments.
      base: the run being tuned; when given, its values for every end of the space are checked too
        (`check_space`), so that an error names the config file and the line of the parameter.

    Raises:
      ConfigError: naming the config file and the line of the offending key.
    """
    values, lines = read_config(args.config) if args.config else ({}, {})
    values = values.get("tune") if isinstance(values, dict) else None
    values = dict(values) if isinstance(values, dict) else values or {}
    if not isinstance(values, dict):
        raise in_file(ConfigError(f"tune: expected a mapping, got {type(values).__name__}."), args.config, lines)
    if args.objective is not None and args.direction is None:
        values.pop("direction", None)  # the file's direction was for its own objective
    for name in ("trials", "objective", "direction", "storage", "study_name", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    try:
        tune = tune_config_from_dict(values, f"{args.config}: tune" if args.config else "tune")
        if base is not None:
            check_space(tune, base)
    except ConfigError as error:
        raise in_file(error, args.config, lines) from None
    return tune


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `tfrec-video tune` / `python -m tfrec_video tune`."""
    parser.add_argument("--config", metavar="FILE", help="a YAML or JSON run config, with an optional tune: section")
    parser.add_argument("--trials", type=int, help="COMPLETE + PRUNED trials the study should hold (tune.trials)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run config value for every trial, e.g. --set training.epochs=5")
    parser.add_argument("--output-dir", help="where the study, the trials and the best config go")
    parser.add_argument("--epochs", type=int, help="epochs of each trial (training.epochs)")
    parser.add_argument("--objective", help="the epoch-log metric to optimise, e.g. val_auc (tune.objective)")
    parser.add_argument("--direction", choices=("maximize", "minimize"), help="default: minimise losses")
    parser.add_argument("--storage", help="an Optuna RDB URL shared by several processes "
                                          "(default sqlite:///<output_dir>/study.db)")
    parser.add_argument("--study-name", help="the study's name in the storage (default: the output directory's name)")
    parser.add_argument("--seed", type=int, help="the sampler's seed (tune.seed)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="0 silent, 1 one line per trial (default), 2 also the trials' epochs")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    config = load_run_config(args.config, overrides)
    report = run_tune(config, tune_config_from_args(args, config), verbose=args.verbose)
    return 0 if report["best"] is not None else 1


def add_cli(subparsers) -> None:
    """Registers `tune` on the `tfrec-video` command line."""
    parser = subparsers.add_parser(
        "tune", help="hyper-parameter search (Optuna: TPE, pruning, resumable SQLite/RDB study), best config",
        description=__doc__.split("\n\n")[0] + " See tfrec_video.training.search_space for the tune: section.")
    add_arguments(parser)
