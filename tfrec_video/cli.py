"""The `tfrec-video` command line.

    tfrec-video quickstart         train, evaluate and export on the built-in dataset
    tfrec-video train --config F   train from a YAML/JSON config (callbacks, resume, report, plots, export)
    tfrec-video embed ...          embed raw thumbnails and audio with pretrained models (resumable)
    tfrec-video evaluate ...       evaluate an exported SavedModel on test impressions (report.json)
    tfrec-video export ...         turn a saved model (save_model) into a servable SavedModel version
    tfrec-video generate-data ...  write the built-in dataset to a directory
"""

import argparse
import os
import sys
from typing import Optional, Sequence


def _quiet_tensorflow():
    # TF's C++ start-up chatter (CUDA probes, oneDNN notices) buries the progress bars.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _add_quickstart(subparsers):
    p = subparsers.add_parser("quickstart", help="train, evaluate and export on the built-in dataset")
    p.add_argument("--data-dir", default=None, help="dataset cache directory (default ~/.cache/tfrec_video/builtin)")
    p.add_argument("--tiny", action="store_true", help="a tiny dataset and model: a smoke test in seconds")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size")
    p.add_argument("--report", default="report.json", help="where to write report.json")
    p.add_argument("--export-dir", default="saved_models", help="saved_models directory")
    p.add_argument("--name", default="video_rec", help="exported model name")
    p.set_defaults(func=_run_quickstart)


def _run_quickstart(args) -> int:
    from tfrec_video.datasets import BuiltinConfig
    from tfrec_video.models.config import ModelConfig
    from tfrec_video.quickstart import run_quickstart
    from tfrec_video.training import TrainingConfig

    dataset_config = BuiltinConfig.tiny() if args.tiny else BuiltinConfig()
    model_config = ModelConfig(embedding_dim=16, title_vocabulary_size=500) if args.tiny else ModelConfig()
    defaults = TrainingConfig(batch_size=256, epochs=1) if args.tiny else TrainingConfig()
    training_config = TrainingConfig(
        batch_size=defaults.batch_size if args.batch_size is None else args.batch_size,
        epochs=defaults.epochs if args.epochs is None else args.epochs, seed=defaults.seed)
    run_quickstart(args.data_dir, dataset_config, model_config, training_config, report_path=args.report,
                   export_dir=args.export_dir, model_name=args.name)
    return 0


def _add_evaluate(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="evaluate an exported SavedModel on test impressions; write report.json",
        description="Evaluate an exported SavedModel version directory on test impressions and write report.json "
                    "(the sections quickstart writes, with the ID-only baseline trained on --train). Give a "
                    "built-in dataset with --data-dir (oracle metrics included), or your own files with --catalog, "
                    "--train and --test (files, directories or quoted globs; TFRecord, Parquet or CSV).")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="an exported version directory, e.g. saved_models/video_rec/1")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="a built-in dataset directory (has dataset.json)")
    p.add_argument("--catalog", nargs="+", default=None, metavar="GLOB", help="catalog files")
    p.add_argument("--train", nargs="+", default=None, metavar="GLOB",
                   help="training impressions (cold start, popularity and the ID-only baseline)")
    p.add_argument("--test", nargs="+", default=None, metavar="GLOB", help="test impressions")
    p.add_argument("--report", default="report.json", help="where to write report.json")
    p.add_argument("--baseline-epochs", type=int, default=None, help="epochs of the ID-only baseline")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from tfrec_video.errors import ConfigError
    from tfrec_video.evaluate_export import run_evaluate

    if args.baseline_epochs is not None and args.baseline_epochs <= 0:
        raise ConfigError(f"--baseline-epochs must be a positive integer, got {args.baseline_epochs}.")
    run_evaluate(args.model, data_dir=args.data_dir, catalog=args.catalog, train=args.train, test=args.test,
                 report_path=args.report, baseline_epochs=args.baseline_epochs)
    return 0


def _add_export(subparsers):
    p = subparsers.add_parser(
        "export", help="write saved_models/<name>/<version>/ from a saved model and a catalog",
        description="Export a model written by tfrec_video.models.save_model as a TF Serving SavedModel "
                    "version (atomic, auto-incremented), retrieving from the given catalog.")
    p.add_argument("--model", required=True, metavar="DIR", help="a model directory written by save_model")
    p.add_argument("--catalog", required=True, nargs="+", metavar="GLOB",
                   help="the catalog to recommend from (TFRecord, Parquet or CSV files, directories or globs)")
    p.add_argument("--export-dir", default="saved_models", help="the saved_models directory")
    p.add_argument("--name", default="video_rec", help="model name (the directory TF Serving serves)")
    p.add_argument("-k", type=int, default=100, help="candidates retrieved before ranking")
    p.add_argument("-n", type=int, default=10, help="videos returned by serving_default")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from tfrec_video.errors import ConfigError

    if not 0 < args.n <= args.k:
        raise ConfigError(f"need 0 < -n <= -k, got -n {args.n} and -k {args.k}.")
    from tfrec_video.data.pipeline import load_catalog
    from tfrec_video.export import export_saved_model
    from tfrec_video.models.saving import load_model
    from tfrec_video.schema import catalog_schema

    model = load_model(args.model)
    v = model.vocabularies
    catalog = load_catalog(args.catalog, catalog_schema(v.image_dim or 1024, v.audio_dim or 128))
    missing = [name for name in model.video_feature_names if name not in catalog]
    if missing:
        raise ConfigError(f"the model reads the video features {missing}, which the catalog {args.catalog} lacks.")
    version_dir = export_saved_model(model, catalog, args.export_dir, name=args.name, k=args.k, n=args.n)
    print(f"exported {version_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrec-video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_quickstart(subparsers)
    from tfrec_video.train import add_cli as add_train_cli

    add_train_cli(subparsers)
    from tfrec_video.media_embedding.step import add_cli as add_embed_cli

    add_embed_cli(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    from tfrec_video.datasets import add_cli as add_dataset_cli

    add_dataset_cli(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tfrec_video.errors import ConfigError, DataValidationError

    try:
        return int(args.func(args) or 0)
    except (DataValidationError, ConfigError) as error:
        print(f"tfrec-video {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
