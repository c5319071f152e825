"""`tfrec-video train --config cfg.yaml` (also `python -m tfrec_video train`): a Keras training script.

One run, from a YAML/JSON `RunConfig` (`tfrec_video.training.run_config`) and flags:

1. read the catalog (and join `tfrec-video embed` output into it), adapt the
   vocabularies, build the model under the chosen `tf.distribute` strategy;
2. `model.fit` with the usual Keras progress bar and these callbacks, in order:
   `RetrievalRecall` (adds `val_recall_at_K`), `EarlyStopping` (optional, on
   `val_auc` or `val_recall_at_K`), `ModelCheckpoint`, `BackupAndRestore`,
   `CSVLogger`, `TensorBoard` (scalars) and `EmbeddingProjector`;
3. save the model (`tfrec_video.models.save_model`), evaluate it on the test
   impressions (the impression protocol and leave-one-out, beside the ID-only and
   history-mean two-towers and the click MLP), write `report.json` and the PNG
   plots, export the servable SavedModel version.

**Resuming.** `BackupAndRestore` keeps the training state (weights, optimizer,
epoch and step) in `output_dir/backup/`, every epoch or every
`callbacks.backup_every` steps. A run that is killed and started again with
the same command resumes from the last backup, losing at most one interval.
The vocabularies are adapted from the same files again, and the run refuses
to resume when they came out differently (the data changed). The backup is
deleted when training finishes; from then until the run is complete,
`output_dir/trained.json` records the finished training, so a run killed
during the evaluation or the export and started again with the same config
and data reuses the saved model instead of training again (a changed config
or changed data trains again, saying which field changed; see
`tfrec_video.cli.run_dir`). A complete run removes the record: the next run
into the same `output_dir` starts from scratch.

**One run per output directory.** The run holds a lock on `output_dir`
(`run.lock`, released by the kernel when the process ends, even by `kill -9`):
a second run into it stops at once with an error naming the other process,
and touches none of its files. In a `multi_worker` run only the chief holds it.
`output_dir` and `export.dir` are checked before anything is read: a path that
is a file or that cannot be written is an error that names it.

**Output directory.**

    output_dir/
      config.yaml          the resolved config of the run
      run.lock             held by the run writing here (pid, host, start time, command)
      trained.json         a finished training (only while evaluation, report or export are unfinished)
      backup/              BackupAndRestore state (only while a run is unfinished)
      checkpoints/         ModelCheckpoint weights, every epoch or the best by callbacks.monitor
      history.csv          per-epoch metrics, kept across resumes (CSVLogger)
      tensorboard/         scalars (train/, validation/) and the embedding projector
      model/               the trained model (model.json + checkpoint; load_model)
      report.json          metrics (the evaluate sections), training history, timings, paths
      plots/loss.png, plots/recall_at_k.png, plots/calibration.png

Example:

    tfrec-video train --config cfg.yaml --set training.epochs=5 --output-dir runs/five
    python -m tfrec_video train --config cfg.yaml --strategy mirrored
"""

import argparse
import csv
import json
import math
import os
import tempfile
import time
from typing import Dict, List, Sequence

from tfrec_video.cli.run_dir import (ResumeState, check_output_dir, forget_trained, lock_run_dir,
                                     reusable_training, training_fingerprint, write_trained)
from tfrec_video.training.run_config import RunConfig, STRATEGIES, dump_run_config, load_run_config

BACKUP_DIR = "backup"
HISTORY_FILE = "history.csv"
VOCABULARY_FILE = "vocabularies.json"


def resolve_data(config: RunConfig) -> dict:
    """The run's files, schemas and (for the built-in dataset) ground truth (`tfrec-video tune` shares it)."""
    from tfrec_video.data.schema import catalog_schema, impressions_schema

    data = config.data
    if data.builtin is not None:
        from tfrec_video.data.pipeline import builtin_splits
        from tfrec_video.datasets import GroundTruth, ensure_builtin

        dataset_config = data.builtin_config()
        directory = ensure_builtin(data.builtin_dir, dataset_config, progress=False)
        splits = builtin_splits(directory)
        truth = GroundTruth.load(directory)
        files = {"train": splits["train"], "test": splits["test"],
                 "validation": data.validation or splits.get("validation")}
        if data.days is not None:
            # The daily job's window: those days' tables, tested on the next day (`DataConfig.days`).
            from tfrec_video.datasets.builtin import day_files

            first, last = data.days
            following = day_files(directory, last + 1) if last + 1 < dataset_config.window_days else []
            files = {"train": day_files(directory, first, last), "test": following or None,
                     "validation": data.validation}
            if following:
                truth = truth.with_test_day(last + 1)
        return {"catalog": splits["catalog"], **files, "embeddings": data.embeddings,
                "dataset_dir": directory,
                "truth": truth,
                "catalog_schema": catalog_schema(dataset_config.image_dim, dataset_config.audio_dim),
                "impressions_schema": impressions_schema(dataset_config.history_length, day=data.days is not None)}
    return {"catalog": data.catalog, "train": data.train, "test": data.test, "validation": data.validation,
            "embeddings": data.embeddings, "dataset_dir": None, "truth": None,
            "catalog_schema": catalog_schema(data.image_dim, data.audio_dim, data.title_embedding_dim),
            "impressions_schema": impressions_schema(data.history_length)}


def _callbacks(config: RunConfig, data: dict, catalog, out: str, chief: bool, state: ResumeState) -> List:
    import tensorflow as tf

    from tfrec_video.training.callbacks import EmbeddingProjector, RetrievalRecall

    cb = config.callbacks
    monitor, mode = cb.monitor, cb.monitor_mode()
    callbacks = [state.callback]
    if data["validation"] is not None:
        ks = sorted({k for k in (cb.recall_k, cb.monitored_recall_k()) if k})
        callbacks += [RetrievalRecall(data["validation"], catalog, data["impressions_schema"], k=k,
                                      max_clicks=config.training.recall_max_clicks, seed=config.training.seed,
                                      exclude_seen=config.training.recall_exclude_seen)
                      for k in ks]
        # HeadSelection (training.select_heads, added by fit_model) stops and restores each head itself.
        if cb.early_stopping and not config.training.select_heads:
            callbacks.append(tf.keras.callbacks.EarlyStopping(monitor, mode=mode, patience=cb.patience,
                                                              restore_best_weights=True, verbose=1))
    if cb.checkpoint:
        best_only = data["validation"] is not None
        name = "best" if best_only else "epoch-{epoch:03d}"
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(
            os.path.join(out, "checkpoints", name), monitor=monitor if best_only else "loss", mode=mode,
            save_best_only=best_only, save_weights_only=True))
    callbacks.append(tf.keras.callbacks.BackupAndRestore(os.path.join(out, BACKUP_DIR), save_freq=cb.backup_every))
    # Non-chief workers log to a scratch file: the chief's history is the run's.
    history_path = os.path.join(out, HISTORY_FILE) if chief else _worker_history_path()
    callbacks.append(tf.keras.callbacks.CSVLogger(history_path, append=True))
    if cb.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(out, "tensorboard")))
    if cb.projector and chief:
        callbacks.append(EmbeddingProjector(os.path.join(out, "tensorboard"), catalog, cb.projector_max_videos))
    return callbacks


def _worker_history_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"tfrec-video-worker-{os.getpid()}-history.csv")


def read_history(path: str) -> Dict[str, List[float]]:
    """`{metric: [value per epoch]}` from a `CSVLogger` file (the run's whole history across resumes)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # A process killed while writing can leave a last line cut short: keep whole rows only. A
    # resumed run logs again from the epoch it resumes, so the latest row of an epoch wins.
    rows = [r for r in rows if None not in r.values() and str(r.get("epoch", "")).isdigit()]
    rows = sorted({int(r["epoch"]): r for r in rows}.values(), key=lambda r: int(r["epoch"]))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [_number(r.get(k)) for r in rows] for k in keys}


def _number(cell) -> float:
    # CSVLogger writes "NA" for a metric an epoch did not log.
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")


def _plots(history: dict, report: dict, out: str) -> Dict[str, str]:
    from tfrec_video.evaluation.plots import plot_calibration, plot_loss_curves, plot_recall_at_k

    plots = {}
    if history:
        plots["loss"] = plot_loss_curves(history, os.path.join(out, "plots", "loss.png"))
    if "recall_curve" in report:
        plots["recall_at_k"] = plot_recall_at_k(report, os.path.join(out, "plots", "recall_at_k.png"))
        plots["calibration"] = plot_calibration(report, os.path.join(out, "plots", "calibration.png"))
    return plots


def _retrieval_baselines(config: RunConfig, data: dict) -> dict:
    """The plain two-towers every report compares against, trained on the run's training split."""
    from tfrec_video.models.history_mean import fit_history_mean_baseline
    from tfrec_video.models.id_only import fit_id_only_baseline

    seed, schema = config.training.seed, data["impressions_schema"]
    return {"id_only": fit_id_only_baseline(data["train"], schema, seed=seed, validate=False),
            "history_mean": fit_history_mean_baseline(data["train"], schema, data["validation"], seed=seed,
                                                      validate=False)}


def run_training(config: RunConfig, verbose: int = 1, extra_callbacks: Sequence = ()) -> dict:
    """Runs one training run (see the module docstring) and returns its report.

    Args:
      config: the run, with resolved paths (`load_run_config`).
      verbose: Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.
      extra_callbacks: Keras callbacks run after the run's own (which add the
        validation metrics to `logs`), for example `tfrec-video tune`'s pruning
        callback. They may stop training (`model.stop_training`) or raise.

    Returns:
      The report also written to `output_dir/report.json` (by the chief).

    Raises:
      ConfigError: a bad config; an `output_dir` or `export.dir` that is a file or
        cannot be written (checked before anything is read or trained); another
        live run holding `output_dir` (`RunDirBusy`).
    """
    check_output_dir(config.output_dir, "output_dir")
    if config.export.enabled:
        check_output_dir(config.export.dir, "export.dir")
        check_output_dir(os.path.join(config.export.dir, config.export.name), "export.dir/export.name")
    from tfrec_video.distribute import is_chief, make_strategy

    # First: a multi-worker strategy must exist before TensorFlow runs any op.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    with lock_run_dir(config.output_dir, chief):
        return _run_locked(config, strategy, chief, verbose, extra_callbacks)


def _run_locked(config: RunConfig, strategy, chief: bool, verbose: int, extra_callbacks: Sequence) -> dict:
    """`run_training` once the output paths are checked and `output_dir` is this run's alone."""
    say = print if verbose else (lambda *a, **k: None)
    start = time.time()
    from tfrec_video.data.pipeline import impressions_dataset, load_catalog
    from tfrec_video.data.tables import read_table
    from tfrec_video.distribute import worker_dir
    from tfrec_video.evaluation.report import evaluate, format_table, write_report
    from tfrec_video.training.fit import click_counts

    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    if chief:
        dump_run_config(config, os.path.join(out, "config.yaml"))
    data = resolve_data(config)
    # The test split too, before training: fit_model checks train against validation only.
    from tfrec_video.data.integrity import check_splits_agree

    check_splits_agree({"train": data["train"], "validation": data["validation"], "test": data["test"]},
                       data["impressions_schema"])
    catalog = load_catalog(data["catalog"], data["catalog_schema"])
    if data["embeddings"] is not None:
        from tfrec_video.data.media_embeddings import attach_embeddings

        catalog = attach_embeddings(catalog, data["embeddings"], image_dim=config.data.image_dim,
                                    audio_dim=config.data.audio_dim,
                                    title_embedding_dim=config.data.title_embedding_dim)

    model, record, reused = _trained_model(config, data, catalog, strategy, chief, say, verbose, extra_callbacks)
    trained = record["training"]
    timings = {"train_s": trained["train_s"]}
    # The record's history is JSON (None for NaN); the plots and final loss want numbers.
    history = {k: [float("nan") if v is None else v for v in values] for k, values in trained["history"].items()}
    # 1-based, as in the Keras log: the last epoch that ran, when a callback stopped before `epochs`.
    epochs_total = len(next(iter(history.values()), []))
    stopped = epochs_total if 0 < epochs_total < config.training.epochs else None

    report: dict = {}
    if chief and data["test"] is not None:
        t = time.time()
        counts = click_counts(read_table(data["train"], data["impressions_schema"], validate=False))
        test = impressions_dataset(data["test"], catalog, data["impressions_schema"], batch_size=4096).unbatch()
        report = evaluate(model, catalog, test, train_video_ids=model.vocabularies.video_ids,
                          train_click_counts=counts, truth=data["truth"], served_k=config.export.k,
                          served_n=config.export.n, baselines=_retrieval_baselines(config, data),
                          leave_one_out=True)
        if data["validation"] is not None:
            from tfrec_video.training.baselines import click_mlp_baseline

            report["ranking"].update(click_mlp_baseline(catalog, data["train"], data["validation"], data["test"],
                                                        data["impressions_schema"], model.vocabularies,
                                                        seed=config.training.seed))
        timings["evaluate_s"] = round(time.time() - t, 1)
    report["training"] = {
        "epochs_run": trained["epochs_run"], "epochs_total": epochs_total,
        "resumed": trained["resumed"], "resumed_from_epoch": trained["resumed_from_epoch"],
        "reused_trained_model": reused, "stopped_early_at_epoch": stopped,
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "history": trained["history"],  # JSON: None for a NaN
        "replicas": int(strategy.num_replicas_in_sync), "strategy": config.strategy,
        "selection": trained["selection"], "calibration": trained["calibration"],
        "list_blend": trained["list_blend"],
        # What a warm start kept or refreshed and what it merged (None from scratch), and the model's lineage.
        "warm_start": trained.get("warm_start"), "lineage": trained.get("lineage"),
    }
    # The "auto" fields of ModelConfig as the data decided them, and the data shape the rules read.
    report["model_defaults"] = getattr(model, "data_rules", None)
    report["data_shape"] = model.vocabularies.data_shape
    if config.export.enabled:
        from tfrec_video.serving.export import export_saved_model

        settings = {k: getattr(config.export, k) for k in ("dir", "name", "k", "n", "keep_seen", "score_weights")}
        done = record.get("export") or {}
        if reused and done.get("settings") == settings and os.path.isdir(done.get("path", "")):
            version_dir = done["path"]  # the killed run finished this export before it died
            say(f"Keeping the export the earlier run finished: {version_dir}")
        else:
            t = time.time()
            with worker_dir(config.export.dir, strategy) as directory:
                version_dir = export_saved_model(model, catalog, directory, name=config.export.name,
                                                 k=config.export.k, n=config.export.n,
                                                 exclude_seen=not config.export.keep_seen,
                                                 score_weights=config.export.score_weights)
            timings["export_s"] = round(time.time() - t, 1)
            if chief:  # a kill from here on does not export again
                write_trained(out, dict(record, export={"path": os.path.abspath(version_dir), "settings": settings}))
        report["export"] = {"path": os.path.abspath(version_dir)}
    if not chief:
        return report
    report["plots"] = _plots(history, report, out)
    timings["total_s"] = round(time.time() - start, 1)
    report.update({"config": config.to_dict(), "dataset": data["dataset_dir"], "timings": timings,
                   "model_dir": os.path.join(out, "model")})
    write_report(report, os.path.join(out, "report.json"))
    forget_trained(out)  # the run is complete: the next one into output_dir starts from scratch
    if "ranking" in report:
        say("\n" + format_table(report))
    say(f"\nreport: {os.path.join(out, 'report.json')}" +
        (f"\nexport: {report['export']['path']}" if "export" in report else ""))
    return report


def _trained_model(config: RunConfig, data: dict, catalog, strategy, chief: bool, say, verbose: int,
                   extra_callbacks: Sequence):
    """The run's trained model: the one an earlier, killed run of the same config finished, or trained now.

    Returns:
      `(model, record, reused)`: `record` is the finished-training record
      (`tfrec_video.cli.run_dir`), whose `training` holds what the report says of
      the training; `reused` says whether the model was loaded instead of trained.
    """
    from tfrec_video.distribute import num_workers, worker_dir
    from tfrec_video.models.saving import load_model, save_model
    from tfrec_video.training.fit import fit_model

    out = config.output_dir
    model_dir = os.path.join(out, "model")
    backup = os.path.join(out, BACKUP_DIR)
    resuming = os.path.isdir(backup) and bool(os.listdir(backup))
    fingerprint = training_fingerprint(config, data) if chief else None
    # A single process only: the workers of a cluster could not all see the record the chief may remove.
    if chief and not resuming and num_workers(strategy) == 1:
        record, why_not = reusable_training(out, fingerprint, model_dir)
        if record is not None:
            say(f"Reusing the model an earlier run trained in {model_dir}: its training finished, the rest "
                "of the run did not (see tfrec_video.cli.run_dir)")
            return load_model(model_dir), record, True
        if why_not:
            say(f"Training again: {why_not}")
    if chief:
        forget_trained(out)
    state = ResumeState(os.path.join(out, VOCABULARY_FILE), backup, chief)
    if not resuming:
        for stale in (HISTORY_FILE, VOCABULARY_FILE):
            if chief and os.path.exists(os.path.join(out, stale)):
                os.remove(os.path.join(out, stale))
    say(f"{'Resuming the unfinished run' if resuming else 'Training'} in {out} "
        f"(strategy {config.strategy}, {strategy.num_replicas_in_sync} replica(s))")

    t = time.time()
    callbacks = _callbacks(config, data, catalog, out, chief, state) + list(extra_callbacks)
    model, keras_history = fit_model(catalog, data["train"], data["impressions_schema"], config.model,
                                     config.training, validation_paths=data["validation"], callbacks=callbacks,
                                     verbose=verbose, strategy=strategy, served_k=config.export.k,
                                     served_n=config.export.n, warm_start_from=config.warm_start_from,
                                     warm_start=config.warm_start)
    train_s = round(time.time() - t, 1)
    if chief and os.path.isdir(backup) and not os.listdir(backup):
        os.rmdir(backup)  # BackupAndRestore empties it when training finishes
    if not chief and os.path.exists(_worker_history_path()):
        os.remove(_worker_history_path())
    history = read_history(os.path.join(out, HISTORY_FILE)) if chief else dict(keras_history.history)
    training = {
        "history": {k: [v if math.isfinite(v) else None for v in values] for k, values in history.items()},
        "epochs_run": len(keras_history.epoch), "resumed": resuming,
        "resumed_from_epoch": state.first_epoch if resuming else None, "train_s": train_s,
        "selection": getattr(keras_history, "selection", None),
        "calibration": getattr(keras_history, "calibration", None),
        "list_blend": getattr(keras_history, "list_blend", None),
        "warm_start": getattr(keras_history, "warm_start", None),
        "lineage": getattr(model, "lineage", None),
    }
    # Every worker saves and exports (a save all-reduces sync-on-read variables); only the chief's
    # copies land in output_dir and export.dir, the others go to temporary dirs (`worker_dir`).
    with worker_dir(out, strategy) as directory:
        save_model(model, os.path.join(directory, "model"))
    record = {"fingerprint": fingerprint, "training": training}
    if chief:  # written once the model is: a kill from here on does not train again
        write_trained(out, record)
    return model, record, False


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `tfrec-video train` / `python -m tfrec_video train`."""
    parser.add_argument("--config", metavar="FILE", help="a YAML or JSON run config (see tfrec_video.training.run_config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.embedding_dim=32 (repeatable; YAML values)")
    parser.add_argument("--output-dir", help="where the run writes its checkpoints, logs, report and plots")
    parser.add_argument("--epochs", type=int, help="training epochs (training.epochs)")
    parser.add_argument("--batch-size", type=int, help="global batch size (training.batch_size)")
    parser.add_argument("--strategy", choices=STRATEGIES, help="tf.distribute strategy")
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="compute in float16 (losses and the click sigmoid stay float32)")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--warm-start-from", metavar="MODEL_DIR",
                        help="start from this saved model (an earlier run's output_dir/model) and train on the "
                             "new data only: vocabularies grow, weights are copied (warm_start_from)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="0 silent, 1 progress bar (default), 2 one line per epoch")
    parser.set_defaults(func=run_cli)
    return parser


def config_from_args(args) -> RunConfig:
    """The `RunConfig` of parsed `tfrec-video train` arguments: the file, then `--set`, then the flags."""
    overrides: List[str] = list(args.overrides)
    for flag, key in (("output_dir", "output_dir"), ("epochs", "training.epochs"),
                      ("batch_size", "training.batch_size"), ("strategy", "strategy"),
                      ("mixed_precision", "training.mixed_precision"), ("warm_start_from", "warm_start_from")):
        value = getattr(args, flag)
        if flag == "warm_start_from" and value is not None:
            value = os.path.abspath(value)  # a flag's path is the shell's, not relative to the config file
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.no_export:
        overrides.append("export.enabled=false")
    return load_run_config(args.config, overrides)


def run_cli(args) -> int:
    run_training(config_from_args(args), verbose=args.verbose)
    return 0


def add_cli(subparsers) -> None:
    """Registers `train` on the `tfrec-video` command line."""
    parser = subparsers.add_parser(
        "train", help="train from a YAML/JSON config: callbacks, resume, report.json, plots, export",
        description=__doc__.split("\n\n")[0] + " See tfrec_video.training.run_config for the config file.")
    add_arguments(parser)
