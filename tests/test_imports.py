"""`import tfrec_video` makes TFRS importable in either import order (run in fresh processes)."""

import os
import subprocess
import sys

import pytest

_ENV = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
_ENV["TF_CPP_MIN_LOG_LEVEL"] = "3"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_ENV, timeout=300)


CHECK = (
    "import tensorflow_recommenders as tfrs\n"
    "assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
    "tfrs.tasks.Retrieval()\n"
    "print('ok')\n"
)


@pytest.mark.parametrize("imports", [
    "import tfrec_video\nimport tensorflow as tf\n",
    "import tensorflow as tf\nimport tfrec_video\n",
], ids=["tfrec_video_first", "tensorflow_first"])
def test_tfrs_importable_in_either_order(imports):
    result = _run(imports + CHECK)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_without_tfrec_video_tfrs_fails():
    # Guards the premise: if TF stopped needing the variable, the workaround would be dead code.
    result = _run("import tensorflow as tf\nimport tensorflow_recommenders\n")
    assert result.returncode != 0


def test_keras3_already_resolved_is_a_clear_error():
    result = _run("import tensorflow as tf\nimport os\nos.environ['TF_USE_LEGACY_KERAS']='0'\n"
                  "tf.keras.layers\nos.environ.pop('TF_USE_LEGACY_KERAS')\nimport tfrec_video\n")
    assert result.returncode != 0
    assert "Keras 3" in result.stderr and "TF_USE_LEGACY_KERAS" in result.stderr
