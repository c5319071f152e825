"""`TrialPruning`: reports a tuning trial's validation metric to Optuna after each epoch, and prunes it.

`tfrec-video tune` trains each trial with `run_training(..., extra_callbacks=[TrialPruning(trial,
objective)])`. The run's own callbacks come first, so at `on_epoch_end` the logs already hold
`val_auc`, `val_logloss` and `val_recall_at_K` (`RetrievalRecall`). The callback

1. reads `logs[objective]` (a missing key is a `ConfigError` that names the key and the keys
   the logs do have: usually a validation metric without validation data, or a Recall@K whose
   K no callback computes);
2. reports it as `trial.report(value, epoch)`, epochs 1-based as in the Keras log;
3. raises `optuna.TrialPruned` when the study's pruner says so. The exception leaves
   `model.fit` at once; no calibration, save or report follows for a pruned trial.

Non-finite values (a diverged trial) are kept in `values` but not reported, so that a NaN does
not become the median other trials are pruned against.

A trial's value is its best epoch's (`best_value`): with `HeadSelection` every head ends on
its own best validation epoch, and with early stopping the best weights are restored, so the
best epoch is the model the trial leaves, not its last one.

Example:

>>> pruning = TrialPruning(trial, "val_recall_at_100")                        # doctest: +SKIP
>>> run_training(config, verbose=0, extra_callbacks=[pruning])                # doctest: +SKIP
>>> best_value(pruning.values, "maximize")                                    # doctest: +SKIP
(0.412, 3)
"""

import math
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from tfrec_video.errors import ConfigError


def best_value(values: Sequence[Optional[float]], direction: str) -> Tuple[Optional[float], Optional[int]]:
    """The best finite value of a per-epoch series and its 1-based epoch, or `(None, None)`.

    Args:
      values: one value per epoch; None or non-finite entries are skipped.
      direction: `"maximize"` or `"minimize"`.

    Returns:
      `(value, epoch)`; ties go to the earliest epoch.

    Example:

    >>> best_value([0.3, None, 0.5, 0.5], "maximize")
    (0.5, 3)
    """
    best, epoch = None, None
    for number, value in enumerate(values, start=1):
        if value is None or not math.isfinite(value):
            continue
        if best is None or (value > best if direction == "maximize" else value < best):
            best, epoch = float(value), number
    return best, epoch


class TrialPruning(tf.keras.callbacks.Callback):
    """Reports `objective` to an Optuna trial after each epoch and raises `optuna.TrialPruned` when told to.

    Args:
      trial: the `optuna.Trial` being trained.
      objective: the epoch-log key to report, e.g. `"val_recall_at_100"`.

    Attributes:
      values: the objective of every epoch so far (NaN kept).
    """

    def __init__(self, trial, objective: str):
        super().__init__()
        self.trial = trial
        self.objective = objective
        self.values: List[float] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.objective not in logs:
            hint = (" It is a validation metric: the run needs validation data (data.validation)."
                    if self.objective.startswith("val_") and not any(k.startswith("val_") for k in logs) else "")
            raise ConfigError(f"tune.objective {self.objective!r} is not in the epoch logs, which have "
                              f"{sorted(logs)}.{hint}")
        value = float(logs[self.objective])
        self.values.append(value)
        if not math.isfinite(value):
            return
        self.trial.report(value, epoch + 1)
        if self.trial.should_prune():
            import optuna  # lazily: only tuning needs it

            raise optuna.TrialPruned(f"{self.objective} {value:.4g} at epoch {epoch + 1}")
