"""`ScaledAdam`: Adam whose step for some variables is a fraction of the learning rate.

A warm start (`tfrec_video.training.warm_start`) fine-tunes a trained model on one
day's window. The two heads want different rates there: the towers must move new
users' and videos' rows from their starting points within a few hundred steps, so
they need the full rate, while the ranking head, fitted on one day's clicks at the
full rate, forgets what the earlier days taught it. On the built-in daily service
(`benchmarks/incremental.py`, 3 seeds, 5 warm days) the ranking head at half the
rate kept next-day AUC within 0.01 of a full retrain on every day (1.0: 0.012
short on two days); halving the towers' rate as well lost up to 6% of Recall@100.

Adam's moments do not depend on the learning rate, and its step is proportional
to it, so scaling the step of a variable after Adam's own update is exactly Adam
with that variable's learning rate scaled: the moments, the checkpoint and the
loss scaling of mixed precision (which skips a step, leaving nothing to scale)
are Adam's. Variables are matched as the optimizer matches its slots
(`_var_key`), so a variable mirrored by a `tf.distribute` strategy is one
variable here too.

Example:

>>> import tfrec_video  # noqa: F401  (tf.keras is Keras 2)
>>> import tensorflow as tf
>>> fast, slow = tf.Variable([1.0]), tf.Variable([1.0])
>>> optimizer = ScaledAdam(0.1, scaled_variables=[slow], scale=0.5)
>>> _ = optimizer.apply_gradients([(tf.constant([1.0]), fast), (tf.constant([1.0]), slow)])
>>> [round(float(1.0 - v.numpy()[0]), 3) for v in (fast, slow)]
[0.1, 0.05]
"""

from typing import Iterable

import tensorflow as tf

from tfrec_video.errors import ConfigError, shorten


class ScaledAdam(tf.keras.optimizers.Adam):
    """Adam with `scale` times the learning rate for `scaled_variables` (see module docstring).

    Args:
      learning_rate: Adam's learning rate (that of every other variable).
      scaled_variables: the variables whose step is scaled.
      scale: their learning rate as a fraction of `learning_rate`, in (0, 1].
      **kwargs: `tf.keras.optimizers.Adam` arguments.
    """

    def __init__(self, learning_rate=0.001, scaled_variables: Iterable[tf.Variable] = (), scale: float = 1.0,
                 name: str = "ScaledAdam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < scale <= 1.0:
            raise ConfigError(f"ScaledAdam: scale must be in (0, 1], got {shorten(scale)}.")
        self.scale = float(scale)
        self._scaled_keys = {self._var_key(v) for v in scaled_variables}

    def update_step(self, gradient, variable):
        if self.scale == 1.0 or self._var_key(variable) not in self._scaled_keys:
            return super().update_step(gradient, variable)
        before = tf.identity(variable)
        super().update_step(gradient, variable)
        variable.assign(before + tf.cast(self.scale, variable.dtype) * (variable - before))

    def get_config(self):
        # The variables are the model's, not configuration: `from_config` gives a plain Adam's behaviour
        # until they are passed again.
        config = super().get_config()
        config["scale"] = self.scale
        return config
