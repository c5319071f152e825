"""Loaded by pytest before any test module.

`import tfrec_video` must run before anything imports TensorFlow, so that
`tf.keras` resolves to Keras 2 (tf_keras) for every test module whatever its
own import order. A module that imports `tensorflow` first and is collected
first otherwise leaves `tf.keras` on Keras 3 for the modules after it.
"""

import tfrec_video  # noqa: F401
