"""`tfrec-video quickstart`: the whole path on the built-in dataset, with no arguments.

1. generate (or reuse from the cache) the built-in dataset with a planted truth;
2. adapt vocabularies and train the joint retrieval + ranking model with `model.fit`,
   and train the ID-only and the history-mean two-tower baselines
   (`tfrec_video.models.id_only`, `tfrec_video.models.history_mean`) on the
   same training split;
3. evaluate on the test split, including cold-start videos, the oracle and the
   baselines (popularity, `id_only_*`, `history_mean_*`), under the impression
   protocol and leave-one-out (`tfrec_video.evaluation.leave_one_out`);
4. print a metrics table and write `report.json`;
5. export `saved_models/video_rec/<version>/` and load it in a fresh process that
   imports only `tensorflow` and `tensorflow_text`.

The export directory and the report's folder are checked before the dataset is
read: a path that is a file, or that cannot be written, is one error naming it.
Quickstart trains in memory, into no run directory, so two at once need no lock:
`report.json` is replaced atomically and each export is a new version.
"""

import json
import os
import subprocess
import sys
import time
from typing import Optional

from tfrec_video.cli.run_dir import check_output_dir, check_output_file
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table
from tfrec_video.datasets import BuiltinConfig, GroundTruth, ensure_builtin, load_manifest
from tfrec_video.evaluation.report import evaluate, format_table, write_report
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.history_mean import fit_history_mean_baseline
from tfrec_video.models.id_only import fit_id_only_baseline
from tfrec_video.serving.export import export_saved_model
from tfrec_video.training.baselines import click_mlp_baseline
from tfrec_video.training.fit import TrainingConfig, click_counts, fit_model

_SERVE_CHECK = """
import sys, json
import tensorflow as tf
import tensorflow_text  # registers the WordPiece ops; nothing from tfrec_video is imported
model = tf.saved_model.load(sys.argv[1])
recommend = model.signatures["serving_default"]
inputs = {}
for name, spec in recommend.structured_input_signature[1].items():
    shape = [2] + [d or 1 for d in spec.shape[1:]]
    if spec.dtype == tf.string:
        value = tf.fill(shape, "")
        if name == "user_id":
            value = tf.constant([sys.argv[2], "a-user-never-seen"])
    else:
        value = tf.zeros(shape, spec.dtype)
    inputs[name] = value
out = recommend(**inputs)
print(json.dumps({"signatures": sorted(model.signatures.keys()),
                  "video_ids": [[v.decode() for v in row] for row in out["video_ids"].numpy().tolist()],
                  "click_probability": out["click_probability"].numpy().round(4).tolist()}))
"""


# The most epochs quickstart trains; each head stops at its own best validation epoch before that.
QUICKSTART_EPOCHS = 12


def check_servable(version_dir: str, known_user: str) -> dict:
    """Loads an export in a fresh Python that imports only TF and TF Text, and recommends."""
    result = subprocess.run([sys.executable, "-c", _SERVE_CHECK, version_dir, known_user],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode != 0:
        raise RuntimeError(f"The export at {version_dir} did not load in a fresh process:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_quickstart(
    data_dir: Optional[str] = None,
    dataset_config: Optional[BuiltinConfig] = None,
    model_config: ModelConfig = ModelConfig(),
    training_config: TrainingConfig = TrainingConfig(),
    report_path: str = "report.json",
    export_dir: str = "saved_models",
    model_name: str = "video_rec",
    verbose: int = 1,
) -> dict:
    """Runs the quickstart (see module docstring) and returns the report.

    Args:
      data_dir: the dataset cache directory (default `~/.cache/tfrec_video/builtin`,
        or `$TFREC_VIDEO_CACHE`).
      dataset_config: the built-in dataset's size and noise; default `BuiltinConfig()`.
      model_config: the model.
      training_config: batch size and epochs.
      report_path: where `report.json` goes.
      export_dir: the `saved_models` directory.
      model_name: the exported model's name.
      verbose: 0 silent, 1 progress bars and the table.

    Returns:
      The report dict also written to `report_path`.

    Raises:
      ConfigError: `export_dir` or `report_path` cannot be written (checked first).
    """
    check_output_dir(export_dir, "export_dir (--export-dir)")
    check_output_dir(os.path.join(export_dir, model_name), "export_dir/model_name (--export-dir/--name)")
    check_output_file(report_path, "report_path (--report)")
    say = print if verbose else (lambda *a, **k: None)
    timings = {}
    start = time.time()
    dataset_config = dataset_config or BuiltinConfig()
    dataset_dir = ensure_builtin(data_dir, dataset_config, progress=bool(verbose))
    manifest = load_manifest(dataset_dir)
    timings["data_s"] = round(time.time() - start, 1)
    say(f"Built-in dataset: {dataset_dir}")

    splits = builtin_splits(dataset_dir)
    cat_schema = catalog_schema(dataset_config.image_dim, dataset_config.audio_dim)
    imp_schema = impressions_schema(dataset_config.history_length)
    catalog = load_catalog(splits["catalog"], cat_schema)

    t = time.time()
    # With the dataset's validation split, each head keeps its best epoch and the clicks are calibrated.
    model, history = fit_model(catalog, splits["train"], imp_schema, model_config, training_config,
                               validation_paths=splits.get("validation"), verbose=verbose)
    timings["train_s"] = round(time.time() - t, 1)

    t = time.time()
    # fit_model validated these files already.
    baselines = {
        "id_only": fit_id_only_baseline(splits["train"], imp_schema, seed=training_config.seed, validate=False),
        "history_mean": fit_history_mean_baseline(splits["train"], imp_schema, splits.get("validation"),
                                                  seed=training_config.seed, validate=False),
    }
    click_mlp = {}
    if "validation" in splits:
        click_mlp = click_mlp_baseline(catalog, splits["train"], splits["validation"], splits["test"], imp_schema,
                                       model.vocabularies, seed=training_config.seed)
    timings["baseline_s"] = round(time.time() - t, 1)

    t = time.time()
    train_raw = read_table(splits["train"], imp_schema, validate=False)
    counts = click_counts(train_raw)
    test = impressions_dataset(splits["test"], catalog, imp_schema, batch_size=4096).unbatch()
    report = evaluate(model, catalog, test, train_video_ids=model.vocabularies.video_ids,
                      train_click_counts=counts, truth=GroundTruth.load(dataset_dir), baselines=baselines,
                      leave_one_out=True)
    report["ranking"].update(click_mlp)
    timings["evaluate_s"] = round(time.time() - t, 1)

    t = time.time()
    version_dir = export_saved_model(model, catalog, export_dir, name=model_name)
    served = check_servable(version_dir, model.vocabularies.user_ids[0])
    timings["export_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - start, 1)

    report.update({
        "training": {"final_loss": float(history.history["loss"][-1]), "epochs": training_config.epochs,
                     "epochs_run": len(history.epoch), "batch_size": training_config.batch_size,
                     "selection": history.selection, "calibration": history.calibration,
                     "list_blend": history.list_blend},
        "export": {"path": os.path.abspath(version_dir), "signatures": served["signatures"],
                   "fresh_process_recommendation": served["video_ids"][0]},
        "dataset": {"path": os.path.abspath(dataset_dir), "config": manifest.get("config")},
        "model_config": model_config.to_dict(),
        # The "auto" fields as the data decided them, and the data shape the rules read.
        "model_defaults": model.data_rules, "data_shape": model.vocabularies.data_shape,
        "timings": timings,
    })
    write_report(report, report_path)
    say("\n" + format_table(report))
    say(f"\nreport: {os.path.abspath(report_path)}\nexport: {os.path.abspath(version_dir)} "
        f"(loaded in a fresh process; top videos for a known user: {served['video_ids'][0][:5]})")
    say(f"time: {timings}")
    return report


def add_cli(subparsers) -> None:
    """Registers `quickstart` on the `tfrec-video` command line."""
    p = subparsers.add_parser("quickstart", help="train, evaluate and export on the built-in dataset")
    p.add_argument("--data-dir", default=None, help="dataset cache directory (default ~/.cache/tfrec_video/builtin)")
    p.add_argument("--dataset", choices=("default", "sparse", "tiny"), default="default",
                   help="the built-in regime: default (dense users, media), sparse (BuiltinConfig.sparse(): "
                        "a median of 6 clicks per user, titles only, many cold videos) or tiny")
    p.add_argument("--tiny", action="store_true", help="a tiny dataset and model: a smoke test in seconds "
                                                       "(the same as --dataset tiny)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size")
    p.add_argument("--report", default="report.json", help="where to write report.json")
    p.add_argument("--export-dir", default="saved_models", help="saved_models directory")
    p.add_argument("--name", default="video_rec", help="exported model name")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    tiny = args.tiny or args.dataset == "tiny"
    dataset_config = BuiltinConfig.named("tiny" if tiny else args.dataset)
    model_config = ModelConfig(embedding_dim=16, title_vocabulary_size=500) if tiny else ModelConfig()
    # Epochs are an upper bound: HeadSelection ends each head's training at its best validation epoch.
    defaults = TrainingConfig(batch_size=256, epochs=2) if tiny else TrainingConfig(epochs=QUICKSTART_EPOCHS)
    training_config = TrainingConfig(
        batch_size=defaults.batch_size if args.batch_size is None else args.batch_size,
        epochs=defaults.epochs if args.epochs is None else args.epochs, seed=defaults.seed)
    run_quickstart(args.data_dir, dataset_config, model_config, training_config, report_path=args.report,
                   export_dir=args.export_dir, model_name=args.name)
    return 0
