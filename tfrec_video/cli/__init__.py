"""The `tfrec-video` command line: one module per command, and `main` that dispatches.

`quickstart`, `train` (also `run_training`, a whole run from a `RunConfig`), `tune` (a
hyper-parameter search of such runs), `embed`, `evaluate`, `export` and `generate_data`, each
with `add_cli(subparsers)`; `run_dir` holds what they share about output directories (paths
checked first, the run lock, the finished-training record). The top layer:
it may import every other subpackage, and nothing in the package imports it.
"""

from tfrec_video.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
