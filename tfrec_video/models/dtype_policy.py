"""`dtype_policy`: Keras's global dtype policy for the duration of a `with` block.

Mixed precision (`TrainingConfig(mixed_precision=...)`) is a global Keras policy;
the model is built and first called inside this block, and the policy is restored
after it, so nothing else in the process changes precision.
"""

import contextlib
from typing import Iterator, Optional

import tensorflow as tf


@contextlib.contextmanager
def dtype_policy(name: Optional[str]) -> Iterator[None]:
    """Keras's global dtype policy set to `name` inside a `with` block, and restored after it.

    A Keras layer takes the global policy when it is created, and some layers
    are created only when the model first runs (a `Dense` inside a layer's
    `build`), so a model must be built, and first called, inside the block.

    Args:
      name: a Keras policy name (`"mixed_float16"`, `"mixed_bfloat16"`,
        `"float32"`), or None to leave the policy alone.

    Example:

    >>> import tensorflow as tf
    >>> with dtype_policy("mixed_float16"):
    ...     layer = tf.keras.layers.Dense(2)
    >>> layer.compute_dtype, layer.dtype, tf.keras.mixed_precision.global_policy().name
    ('float16', 'float32', 'float32')
    """
    if name is None:
        yield
        return
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
