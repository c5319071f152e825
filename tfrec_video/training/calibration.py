"""Calibrating the served click probability: Platt scaling fitted on validation data.

A click model that is right about *order* (AUC) can still be wrong about *level*:
sigmoid cross-entropy stopped at the best validation epoch, a ranking head
retrained on towers from another epoch (`HeadSelection`), or a validation period
whose click rate drifted, all leave probabilities that are too sure or too timid.
Whoever uses `click_probability` as a probability (an expected-clicks budget, a
blend with watch time) needs it calibrated.

Platt scaling (Platt, 1999) fits two numbers on held-out impressions, the logit
`z` becoming `a * z + b`, by maximum likelihood (Newton's method on the log-loss,
in float64). Two parameters cannot overfit a validation set of thousands of rows,
and a monotone map leaves AUC and every ranking unchanged. The values go into the
ranking head's calibration weights (`RankingHead.set_calibration`), so the
exported SavedModel serves calibrated probabilities with no extra step.

Example:

>>> import numpy as np
>>> z = np.array([-2.0, -1.0, 0.0, 1.0, 2.0] * 40)
>>> y = (np.random.default_rng(0).random(200) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(float)
>>> scale, bias = fit_platt(z, y)
>>> bool(0.2 < scale < 0.9 and -1.6 < bias < -0.6)
True
"""

import warnings
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.errors import ConfigError
from tfrec_video.evaluation.metrics import calibration, logloss


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 50) -> Tuple[float, float]:
    """`(scale, bias)` minimising the log-loss of `sigmoid(scale * logits + bias)` against 0/1 `labels`.

    Raises:
      ValueError: fewer than two rows, or only one class.
    """
    z = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    if z.shape != y.shape or len(z) < 2 or y.min() == y.max():
        raise ValueError(f"fit_platt: need at least two rows of both classes, got {len(y)} rows with "
                         f"{int(y.sum()) if len(y) else 0} positives.")
    params = np.array([1.0, 0.0])
    design = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ params, -40, 40)))
        gradient = design.T @ (p - y)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.abs(step).max() < 1e-10:
            break
    scale, bias = float(params[0]), float(params[1])
    if not scale > 0:
        # A model whose scores run against the clicks: nothing a monotone map should hide.
        raise ValueError(f"fit_platt: the fitted scale is {scale:.4g}; the logits do not rank the clicks.")
    return scale, bias


def calibrate_clicks(model, data, steps=None) -> Dict[str, float]:
    """Fits Platt scaling on `data` and sets it in `model`'s ranking head.

    Args:
      model: a `VideoRecModel` (with `ModelConfig.ranking_calibration`).
      data: batched validation impressions with `clicked` (catalog features joined).
      steps: batches to read, when `data` repeats.

    Returns:
      `{"scale", "bias", "rows", "logloss_before", "logloss_after", "ece_before", "ece_after"}`,
      measured on `data`.

    Raises:
      ConfigError: the model has no calibration weights, or `data` lacks clicks of either class.
    """
    head = model.ranking_head
    if not getattr(head, "calibration", False):
        raise ConfigError("calibrate_clicks: the model was built with ModelConfig(ranking_calibration=False).")
    previous = float(head.calibration_scale.numpy()), float(head.calibration_bias.numpy())
    head.set_calibration(1.0, 0.0)
    logits = tf.function(lambda features: model.rank_logits(features, training=False))
    raw, labels = [], []
    for i, batch in enumerate(data):
        if steps is not None and i >= steps:
            break
        raw.append(np.asarray(logits(batch)).reshape(-1))
        labels.append(np.asarray(batch["clicked"]).reshape(-1))
    z = np.concatenate(raw) if raw else np.zeros(0)
    y = np.concatenate(labels).astype(np.float64) if labels else np.zeros(0)
    try:
        scale, bias = fit_platt(z, y)
    except ValueError as error:
        head.set_calibration(*previous)  # a refusal leaves the model as it was
        raise ConfigError(f"calibrate_clicks: cannot calibrate on this validation data: {error}") from None
    head.set_calibration(scale, bias)
    before, after = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-(scale * z + bias)))
    return {"scale": scale, "bias": bias, "rows": int(len(y)),
            "logloss_before": logloss(y, before), "logloss_after": logloss(y, after),
            "ece_before": calibration(y, before)["ece"], "ece_after": calibration(y, after)["ece"]}


class ClickCalibration(tf.keras.callbacks.Callback):
    """Calibrates the click probability on `validation_data` when training ends (`calibrate_clicks`).

    Put it after `HeadSelection`, which chooses the ranking weights being calibrated. The result is in
    `self.result`. When the validation data cannot calibrate the clicks (one class only, or logits that
    do not rank the clicks, as after too short a training on too little data), training still ends: the
    calibration stays the identity, a warning says why, and `self.result` is `{"skipped": reason}`.
    """

    def __init__(self, validation_data, validation_steps=None):
        super().__init__()
        self.validation_data = validation_data
        self.validation_steps = validation_steps
        self.result: Dict[str, float] = {}

    def on_train_end(self, logs=None):
        try:
            self.result = calibrate_clicks(self.model, self.validation_data, self.validation_steps)
        except ConfigError as error:
            # A finished training is worth more than its calibration: keep the model, say why.
            warnings.warn(f"the click probability is not calibrated: {error}", stacklevel=2)
            self.result = {"skipped": str(error)}
