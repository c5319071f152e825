"""`MLP`: the stack of ReLU layers every tower and the ranking head end with."""

from typing import Optional, Sequence

import tensorflow as tf


class MLP(tf.keras.layers.Layer):
    """Dense ReLU layers, then an optional linear output layer.

    Args:
      hidden_units: widths of the ReLU layers.
      output_dim: width of a final linear layer, or None for none.
      dropout: dropout rate after each hidden layer.
      output_dtype: dtype policy of the output layer, or None for the global
        policy. `"float32"` keeps a logit in float32 under a mixed-precision
        policy (the hidden layers still compute in float16).
      l2: L2 penalty on every kernel (added to the model's losses), 0 for none.

    Example:

    >>> import tensorflow as tf
    >>> MLP([16, 8], output_dim=4)(tf.ones([2, 3])).shape
    TensorShape([2, 4])
    """

    def __init__(self, hidden_units: Sequence[int], output_dim: Optional[int] = None, dropout: float = 0.0,
                 output_dtype: Optional[str] = None, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if any(int(u) <= 0 for u in hidden_units) or (output_dim is not None and int(output_dim) <= 0):
            raise ValueError(f"MLP {self.name}: layer widths must be positive, got {list(hidden_units)} and {output_dim}.")
        self.hidden_units = [int(u) for u in hidden_units]
        self.output_dim = None if output_dim is None else int(output_dim)
        self.dropout = float(dropout)
        self.output_dtype = None if output_dtype is None else str(output_dtype)
        self.l2 = float(l2)
        if self.l2 < 0:
            raise ValueError(f"MLP {self.name}: l2 must be >= 0, got {l2}.")
        regularizer = tf.keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.layers_ = []
        for i, units in enumerate(self.hidden_units):
            self.layers_.append(tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                                                      name=f"dense_{i}"))
            if self.dropout > 0:
                # No fixed seed: two towers with equal seeds would drop the same units for a query and
                # its own candidate, inflating exactly the positive pair's score (a label leak).
                # tf.keras.utils.set_random_seed still makes the draws reproducible.
                self.layers_.append(tf.keras.layers.Dropout(self.dropout))
        if self.output_dim is not None:
            self.layers_.append(tf.keras.layers.Dense(self.output_dim, dtype=self.output_dtype,
                                                      kernel_regularizer=regularizer, name="output"))

    def call(self, x, training=None):
        for layer in self.layers_:
            x = layer(x, training=training) if isinstance(layer, tf.keras.layers.Dropout) else layer(x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, output_dim=self.output_dim, dropout=self.dropout,
                      output_dtype=self.output_dtype, l2=self.l2)
        return config
