"""`tfrec-video export`: a saved model (`tfrec_video.models.save_model`) and a catalog into a servable version.

    tfrec-video export --model models/video_rec --catalog 'data/catalog/*.parquet' -k 100 -n 10

The model is exported against the given catalog, so a model trained once can be
exported again when the catalog changes, on another machine.
"""

import os

from tfrec_video.cli.run_dir import check_output_dir
from tfrec_video.data.pipeline import load_catalog
from tfrec_video.data.schema import catalog_schema
from tfrec_video.errors import ConfigError
from tfrec_video.models.saving import load_model
from tfrec_video.serving.export import export_saved_model


def add_cli(subparsers) -> None:
    """Registers `export` on the `tfrec-video` command line."""
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
    p.add_argument("--keep-seen", action="store_true",
                   help="let retrieve and serving_default return videos in the request's history "
                        "(by default they are left out, and n / k others returned)")
    p.add_argument("--score-weights", type=float, nargs=2, metavar=("CLICK", "WATCH"), default=None,
                   help="a watch model's weights of the served score, fixed in the export (default 1 and the "
                        "model's watch_score_weight); the rank_weighted signature takes others per request")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """Handler of `tfrec-video export`: loads the saved model and the catalog, writes one version."""
    if not 0 < args.n <= args.k:
        raise ConfigError(f"need 0 < -n <= -k, got -n {args.n} and -k {args.k}.")
    # Before the model and catalog load: a bad output path is reported in seconds, not after the work.
    check_output_dir(args.export_dir, "--export-dir")
    check_output_dir(os.path.join(args.export_dir, args.name), "--export-dir/--name")
    model = load_model(args.model)
    v = model.vocabularies
    catalog = load_catalog(args.catalog, catalog_schema(v.image_dim or 1024, v.audio_dim or 128,
                                                        v.title_embedding_dim or 384))
    missing = [name for name in model.video_feature_names if name not in catalog]
    if missing:
        raise ConfigError(f"the model reads the video features {missing}, which the catalog {args.catalog} lacks.")
    version_dir = export_saved_model(model, catalog, args.export_dir, name=args.name, k=args.k, n=args.n,
                                     exclude_seen=not args.keep_seen, score_weights=args.score_weights)
    print(f"exported {version_dir}")
    return 0
