"""`tfrec-video refresh-catalog`: the next version of an export, serving a new catalog with the same weights.

    tfrec-video refresh-catalog --export saved_models/video_rec --catalog 'data/catalog_today/*.parquet'

Works from the export alone (no model directory, no retraining): the latest
version is loaded, only the videos added or changed since it are encoded, kept
videos' rows are copied, removed ones dropped, and the result is written as the
next version, atomically, with warmup records (`tfrec_video.serving.refresh`).
TF Serving polling `saved_models/video_rec` picks it up like any export. It
prints the new version and what changed:

    refreshed saved_models/video_rec/8 from version 7: 1000 added, 12 changed, 40 removed, 998960 kept
"""

import argparse
import json
import os

from tfrec_video.cli.run_dir import check_output_dir
from tfrec_video.data.pipeline import load_catalog
from tfrec_video.data.schema import catalog_schema
from tfrec_video.serving.refresh import REFRESH_FILE, latest_export_version, latest_video_inputs, refresh_catalog


def _positive_int(text: str) -> int:
    """argparse type of `--batch-size`: an int >= 1 (0 or less would encode nothing, or fail mid-run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def add_cli(subparsers) -> None:
    """Registers `refresh-catalog` on the `tfrec-video` command line."""
    p = subparsers.add_parser(
        "refresh-catalog", help="write the next version of an export with a new catalog (same weights)",
        description="Write the next version of an exported model (saved_models/<name>) serving a new catalog: "
                    "the latest version's weights, only added and changed videos encoded, atomic, with warmup "
                    "records. Needs no model directory.")
    p.add_argument("--export", required=True, metavar="DIR",
                   help="the model directory TF Serving serves (saved_models/<name>), holding numbered versions")
    p.add_argument("--catalog", required=True, nargs="+", metavar="GLOB",
                   help="the new catalog (TFRecord, Parquet or CSV files, directories or globs): every video to "
                        "recommend from, and no other")
    p.add_argument("--batch-size", type=_positive_int, default=4096, help="videos encoded per batch (>= 1)")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """Handler of `tfrec-video refresh-catalog`: reads the catalog with the export's widths, writes one version."""
    # Before the catalog loads: a bad output path or an empty model directory is reported in seconds.
    check_output_dir(args.export, "--export")
    # The version is resolved once: the catalog is read with its widths, and that same version is refreshed (an
    # export publishing a newer one meanwhile makes the refresh fail, not read one version and refresh another).
    version = latest_export_version(args.export)
    # The widths of the export's vector columns, from saved_model.pb alone (no variable restored yet).
    specs = latest_video_inputs(args.export, version)
    width = {name: spec.shape[1] for name, spec in specs.items() if spec.shape.rank == 2}
    catalog = load_catalog(args.catalog, catalog_schema(width.get("image_embedding", 1024),
                                                        width.get("audio_embedding", 128),
                                                        width.get("title_embedding", 384)))
    version_dir = refresh_catalog(args.export, catalog, batch_size=args.batch_size,
                                  source=", ".join(args.catalog), from_version=version)
    with open(os.path.join(version_dir, REFRESH_FILE), encoding="utf-8") as f:
        counts = json.load(f)
    print(f"refreshed {version_dir} from version {counts['from_version']}: {counts['added']} added, "
          f"{counts['changed']} changed, {counts['removed']} removed, {counts['kept']} kept")
    return 0
