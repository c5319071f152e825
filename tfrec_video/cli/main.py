"""The `tfrec-video` command line.

    tfrec-video quickstart         train, evaluate and export on the built-in dataset
    tfrec-video train --config F   train from a YAML/JSON config (callbacks, resume, report, plots, export)
    tfrec-video tune --config F    hyper-parameter search over the config's model and training fields (Optuna)
    tfrec-video embed ...          embed raw thumbnails and audio with pretrained models (resumable)
    tfrec-video evaluate ...       evaluate an exported SavedModel on test impressions (report.json)
    tfrec-video export ...         turn a saved model (save_model) into a servable SavedModel version
    tfrec-video refresh-catalog --export DIR --catalog F
                                   the next version of an export, serving a new catalog (same weights)
    tfrec-video prepare ...        raw event logs to train/validation/test tables (Apache Beam, local or a cluster)
    tfrec-video generate-data ...  write the built-in dataset to a directory
    tfrec-video convert-text-encoder --out DIR
                                   turn the pretrained multilingual-e5-small weights into a TF SavedModel
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from tfrec_video.errors import ConfigError, DataValidationError


def _quiet_tensorflow():
    # TF's C++ start-up chatter (CUDA probes, oneDNN notices) buries the progress bars.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_parser() -> argparse.ArgumentParser:
    """The `tfrec-video` parser: one sub-command per module of `tfrec_video.cli`."""
    # Imported here, after main() has quieted TensorFlow's start-up logging: the commands import TF.
    from tfrec_video.cli import (convert_text_encoder, embed, evaluate, export, generate_data, prepare, quickstart,
                                 refresh_catalog, train, tune)

    parser = argparse.ArgumentParser(prog="tfrec-video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (quickstart, train, tune, embed, evaluate, export, refresh_catalog, prepare, generate_data,
                    convert_text_encoder):
        command.add_cli(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "pipeline_options", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Commands on Apache Beam (prepare) hand what they do not know to Beam as pipeline options.
    args.pipeline_args = unknown
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DataValidationError, ConfigError) as error:
        print(f"tfrec-video {args.command}: error: {error}", file=sys.stderr)
        return 2

