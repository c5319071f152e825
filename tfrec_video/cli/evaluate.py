"""`tfrec-video evaluate`: an exported SavedModel, evaluated on test impressions, into `report.json`.

    tfrec-video evaluate --model saved_models/video_rec/1 --data-dir DIR
    tfrec-video evaluate --model saved_models/video_rec/1 \\
        --catalog 'data/catalog/*.parquet' --train 'data/train/*.parquet' --test 'data/test/*.parquet'

1. load the version directory (`tfrec_video.serving.loaded.ExportedModel`);
2. find the data: with `--data-dir`, a built-in dataset directory (the one
   `tfrec-video generate-data` or quickstart wrote, with `dataset.json`): its
   catalog, train and test splits and its ground truth (oracle keys); with
   `--catalog`, `--train` and `--test`, the user's own files in any format the
   data layer reads, with schemas built from what the SavedModel reads (the
   `history` length and the image and audio dimensions of its signatures), and
   no oracle;
3. train the ID-only and the history-mean baselines (`tfrec_video.models.id_only`,
   `tfrec_video.models.history_mean`) on the train split (the latter's epochs chosen
   on the validation split, when there is one: `--validation`, or the built-in one);
4. evaluate with `tfrec_video.evaluation.report.evaluate`, the code quickstart uses, so
   the report has the same `retrieval`, `ranking`, `cold_start`, `warm_start`,
   `popularity`, `counts` and `leave_one_out` sections and `id_only_*` and
   `history_mean_*` keys; print the table.

The training impressions are required: they define which test videos are cold
start (absent from training), the popularity baseline's counts, and the ID-only
baseline's training clicks.
"""

import os
import time
from typing import Optional, Sequence, Union

from tfrec_video.cli.run_dir import check_output_file
from tfrec_video.data.files import list_files
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table
from tfrec_video.datasets import GroundTruth, load_manifest
from tfrec_video.errors import ConfigError
from tfrec_video.evaluation.report import evaluate, format_table, write_report
from tfrec_video.models.history_mean import fit_history_mean_baseline
from tfrec_video.models.id_only import fit_id_only_baseline
from tfrec_video.serving.loaded import ExportedModel
from tfrec_video.training.fit import video_counts

Paths = Union[str, Sequence[str]]

# Schema sizes for features the SavedModel does not read (any length then passes through unused).
_DEFAULT_DIMS = {"image_embedding": 1024, "audio_embedding": 128, "title_embedding": 384, "history": 20}


def _builtin_data(data_dir: str):
    """Splits, ground truth and manifest of a built-in dataset directory."""
    try:
        manifest = load_manifest(data_dir)
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    root = manifest["root"]
    truth = GroundTruth.load(root) if os.path.isdir(os.path.join(root, "truth")) else None
    return builtin_splits(root), truth, manifest


def _user_data(catalog: Optional[Paths], train: Optional[Paths], test: Optional[Paths]):
    """The user's files; no ground truth, no manifest."""
    missing = [flag for flag, value in (("--catalog", catalog), ("--train", train), ("--test", test)) if not value]
    if missing:
        raise ConfigError(f"give --data-dir (a built-in dataset) or all of --catalog, --train and --test; missing "
                          f"{', '.join(missing)} (the training impressions define cold start, popularity and the "
                          "ID-only baseline).")
    return {"catalog": catalog, "train": train, "test": test}, None, None


def _schema_sizes(model: ExportedModel, manifest: Optional[dict]):
    """Lengths of `image_embedding`, `audio_embedding` and `history` for the schemas.

    A built-in dataset records them in its manifest, and they must agree with what the
    model reads; for the user's files they come from the SavedModel's input specs.
    """
    if manifest is None:
        return {name: model.feature_length(name) or default for name, default in _DEFAULT_DIMS.items()}
    config = manifest.get("config", {})
    dims = {"image_embedding": config.get("image_dim"), "audio_embedding": config.get("audio_dim"),
            "history": config.get("history_length"), "title_embedding": model.feature_length("title_embedding") or 384}
    for name, size in dims.items():
        wanted = model.feature_length(name)
        if wanted is not None and wanted != size:
            raise ConfigError(f"{model.path}: the model reads {name} of length {wanted}, but the dataset at "
                              f"{manifest['root']} has length {size}; evaluate it on data of the shape it was trained on.")
    return dims


def run_evaluate(
    model_dir: str,
    data_dir: Optional[str] = None,
    catalog: Optional[Paths] = None,
    train: Optional[Paths] = None,
    test: Optional[Paths] = None,
    validation: Optional[Paths] = None,
    report_path: str = "report.json",
    baseline_epochs: Optional[int] = None,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    """Evaluates an exported model (see module docstring) and returns the report.

    Args:
      model_dir: an exported version directory (`saved_models/<name>/<version>`).
      data_dir: a built-in dataset directory; exclusive with the three paths below.
      catalog: the catalog files (file, directory, glob, or a list of them).
      train: the training impressions files.
      test: the test impressions files.
      validation: validation impressions files, for the history-mean baseline's epochs
        (a built-in dataset's own validation split by default).
      report_path: where `report.json` goes.
      baseline_epochs: epochs of the ID-only baseline (default: `fit_id_only_baseline`'s).
      seed: seed of the ID-only baseline.
      verbose: 0 silent, 1 the table and the report path.

    Returns:
      The report dict also written to `report_path`.

    Raises:
      ConfigError: a bad model directory or a bad combination of arguments, naming it; a
        `report_path` that cannot be written (checked first).
      DataValidationError: missing or bad data files, naming the file.
    """
    check_output_file(report_path, "report_path (--report)")
    say = print if verbose else (lambda *a, **k: None)
    timings = {}
    start = time.time()
    if data_dir is not None and any((catalog, train, test)):
        raise ConfigError("give either --data-dir or --catalog/--train/--test, not both.")
    paths, truth, manifest = _builtin_data(data_dir) if data_dir is not None else _user_data(catalog, train, test)
    if validation is not None:
        paths["validation"] = validation
    for split in ("catalog", "train", "test") + (("validation",) if paths.get("validation") else ()):
        list_files(paths[split])  # fail fast, before any loading, naming a path that holds no data
    model = ExportedModel(model_dir)
    dims = _schema_sizes(model, manifest)
    cat_schema = catalog_schema(dims["image_embedding"], dims["audio_embedding"], dims["title_embedding"])
    imp_schema = impressions_schema(dims["history"])
    catalog_columns = load_catalog(paths["catalog"], cat_schema)
    lacking = [name for name in model.video_feature_names if name not in catalog_columns]
    if lacking:
        raise ConfigError(f"{model.path}: the model reads the video features {lacking}, which the catalog "
                          f"{paths['catalog']} lacks.")
    timings["load_s"] = round(time.time() - start, 1)

    t = time.time()
    shown, clicks = video_counts(read_table(paths["train"], imp_schema, validate=True))
    options = {} if baseline_epochs is None else {"epochs": baseline_epochs}
    # The train files were validated just above.
    baselines = {
        "id_only": fit_id_only_baseline(paths["train"], imp_schema, seed=seed, validate=False, **options),
        "history_mean": fit_history_mean_baseline(paths["train"], imp_schema, paths.get("validation"), seed=seed,
                                                  validate=False),
    }
    timings["baseline_s"] = round(time.time() - t, 1)

    t = time.time()
    test_data = impressions_dataset(paths["test"], catalog_columns, imp_schema, batch_size=4096).unbatch()
    lacking = [name for name in model.query_feature_names if name not in test_data.element_spec]
    if lacking:
        raise ConfigError(f"{model.path}: the model reads the user features {lacking}, which the test impressions "
                          f"{paths['test']} lack.")
    report = evaluate(model, catalog_columns, test_data, train_video_ids=shown, train_click_counts=clicks,
                      truth=truth, baselines=baselines, leave_one_out=True)
    timings["evaluate_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - start, 1)

    report.update({
        "model": {"path": os.path.abspath(model.path), "signatures": model.signature_names},
        "data": {"dataset": None if data_dir is None else os.path.abspath(data_dir),
                 **{split: _describe(p) for split, p in paths.items()}, "oracle": truth is not None},
        "timings": timings,
    })
    write_report(report, report_path)
    say(format_table(report))
    say(f"\nreport: {os.path.abspath(report_path)}\ntime: {timings}")
    return report


def _describe(paths: Paths):
    return paths if isinstance(paths, str) else list(paths)


def add_cli(subparsers) -> None:
    """Registers `evaluate` on the `tfrec-video` command line."""
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
    p.add_argument("--validation", nargs="+", default=None, metavar="GLOB",
                   help="validation impressions (optional): the history-mean baseline's epochs are chosen on them")
    p.add_argument("--report", default="report.json", help="where to write report.json")
    p.add_argument("--baseline-epochs", type=int, default=None, help="epochs of the ID-only baseline")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    if args.baseline_epochs is not None and args.baseline_epochs <= 0:
        raise ConfigError(f"--baseline-epochs must be a positive integer, got {args.baseline_epochs}.")
    run_evaluate(args.model, data_dir=args.data_dir, catalog=args.catalog, train=args.train, test=args.test,
                 validation=args.validation, report_path=args.report, baseline_epochs=args.baseline_epochs)
    return 0
