"""`TrainStep`: the training and evaluation steps of `VideoRecModel`, for every head, device count and precision.

`tfrs.Model.train_step` computes `compute_loss` and applies its gradients to every
trainable variable. `VideoRecModel` needs three things more, here:

* Distribution: `compute_loss` is a mean over the replica's rows, and the
  optimizer sums the gradients of all replicas, so the loss is divided by
  `num_replicas_in_sync` first (what Keras does for compiled losses); the step is
  then the gradient of the mean over the global batch, whatever the number of
  replicas.
* Heads: `trained_heads` says which variables a step updates: `"both"` (all),
  `"ranking"` (`ranking_variables`, from the ranking losses alone) or `"watch"`
  (`watch_variables`, from the watch loss alone): the phases of `HeadSelection`.
* Mixed precision: with a `LossScaleOptimizer` (what `compile` makes of the
  optimizer under `mixed_float16`) the loss is scaled up before the float16
  backward pass, so small gradients do not flush to zero, and the gradients are
  scaled back down before the update (which the optimizer skips, lowering the
  scale, when they overflowed).

A mixin: it reads `compute_loss`, `trained_heads`, `ranking_variables`,
`watch_variables` and the loss trackers of the model.
"""

import tensorflow as tf


class TrainStep:
    """`train_step` and `test_step` of `VideoRecModel` (see module docstring)."""

    def trained_variables(self):
        """The variables a training step updates, by `trained_heads`."""
        if self.trained_heads == "ranking":
            return self.ranking_variables
        if self.trained_heads == "watch":
            return self.watch_variables
        return self.trainable_variables

    def train_step(self, inputs):
        """One optimiser step on a batch (on each replica's slice of it under `tf.distribute`; see the
        module docstring).

        Returns:
          The logs: every metric, and `loss`, `regularization_loss` and `total_loss`.
        """
        replicas = self.distribute_strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])
            total_loss = loss + regularization_loss
            step_loss = total_loss / replicas
            if isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
                step_loss = self.optimizer.get_scaled_loss(step_loss)
        variables = self.trained_variables()
        gradients = tape.gradient(step_loss, variables)
        if isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._logs(loss, regularization_loss)

    def test_step(self, inputs):
        """`tfrs.Model.test_step`, with the losses logged as means over replicas (see `_logs`)."""
        loss = self.compute_loss(inputs, training=False)
        regularization_loss = tf.reduce_sum([tf.reduce_sum(term) for term in self.losses])
        return self._logs(loss, regularization_loss)

    def _logs(self, loss, regularization_loss):
        # The trackers are sync-on-read metrics: each replica adds its own loss, and reading them
        # averages over batches and replicas, the same scale as on one device.
        self.loss_tracker.update_state(loss)
        self.regularization_loss_tracker.update_state(regularization_loss)
        self.total_loss_tracker.update_state(loss + regularization_loss)
        return {metric.name: metric.result() for metric in self.metrics}
