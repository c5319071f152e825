"""tfrec_video: a two-stage video recommender on TensorFlow Recommenders.

Importing this package makes TensorFlow Recommenders importable, whatever was
imported before it. TFRS 0.7.7 is written against Keras 2 (`tf_keras`), and
`tf.keras` resolves to Keras 2 only when `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow first resolves `tf.keras`. TensorFlow resolves it lazily, on the first
attribute access of `tf.keras`, so setting the variable here works even when the
user ran `import tensorflow` first. If something already resolved `tf.keras` to
Keras 3, we say so plainly instead of letting TFRS fail deep inside its import.

The layers, bottom to top (a module imports only from its own layer and those
below; `tests/test_layout.py` enforces it):

    errors, config_fields, distribute,     the base: no other tfrec_video import
      deprecated_paths
    data                                   schema, files, tables, formats, pipeline
    preparation                            raw event logs to tables (`tfrec-video prepare`, Apache Beam)
    evaluation                             metrics, whole-catalog ranking, report, plots
    datasets                               the built-in dataset with a planted truth
    features                               vocabularies, WordPiece, PCA
    text_encoders                          pretrained text encoders converted to SavedModels
    towers                                 Keras layers: raw features in, embeddings out
    models                                 VideoRecModel, the ranking head, saving, baselines
    training                               fit_model, callbacks, run configs
    serving                                export for TF Serving, loading an export
    media_embedding                        the offline embed step
    cli                                    the `tfrec-video` commands (`python -m tfrec_video`)

Importing it also sets `TF_CPP_MIN_LOG_LEVEL=3` unless the environment sets it: TensorFlow's C++
start-up logs about CUDA on CPU-only machines read like errors (set it to 0 to see them).

The old flat module paths (`tfrec_video.export`, `tfrec_video.schema`, ...) still
import, with a `DeprecationWarning`, until the release `deprecated_paths` names.
"""

import os as _os

_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up logs on a machine without a GPU look like failures and help no one: "Could
# not find cuda drivers", "Unable to register cuDNN/cuFFT/cuBLAS factory" (logged at ERROR), the
# oneDNN and cpu_feature_guard notices, "TF-TRT Warning". Level 2 still lets the factory errors
# through (measured with TF 2.17.1), so the default is 3; TF reads the variable when it is first
# imported, so this works only when tfrec_video is imported first, as `tfrec-video` does. A value
# already set wins: `TF_CPP_MIN_LOG_LEVEL=0 tfrec-video ...` shows them all again. Python exceptions
# and Python-side TF warnings are not affected.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"


def _check_keras_2():
    import sys

    if _os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
        raise ImportError(
            "tfrec_video needs Keras 2 (tf_keras) because TensorFlow Recommenders does, "
            f"but TF_USE_LEGACY_KERAS={_os.environ.get('TF_USE_LEGACY_KERAS')!r}. "
            "Unset it or set TF_USE_LEGACY_KERAS=1 before starting Python."
        )
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        keras_module = getattr(tf, "keras", None)
        name = getattr(keras_module, "__name__", "")
        if name and not name.startswith("tf_keras"):
            raise ImportError(
                f"tf.keras already resolved to {name!r} (Keras 3) before tfrec_video was "
                "imported. Set TF_USE_LEGACY_KERAS=1 in the environment, or import "
                "tfrec_video before anything touches tf.keras."
            )


_check_keras_2()

from tfrec_video import deprecated_paths as _deprecated_paths  # noqa: E402  (after the Keras check)

_deprecated_paths.install()
