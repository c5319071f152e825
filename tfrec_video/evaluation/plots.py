"""The training report's PNG plots: loss curves, Recall@K against K, click-probability calibration.

Each function draws from plain data — a Keras `History.history`-style dict of
per-epoch lists, or the `report.json` sections that `tfrec_video.evaluation.report.evaluate`
writes (`recall_curve`, `calibration`) — so a plot can be redrawn from a saved
report without the model. Drawing uses matplotlib's non-interactive `Agg`
backend (no display needed) and each file is written to a temporary name and
renamed, so a crash never leaves half a PNG.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "loss.png")
>>> plot_loss_curves({"retrieval_loss": [2.0, 1.5, 1.2], "val_retrieval_loss": [2.1, 1.7, 1.6]}, path) == path
True
"""

import math
import os
from typing import Mapping, Optional, Sequence

# Panels of the loss-curve figure: (title, history keys); a key's `val_` twin is drawn dashed.
_LOSS_PANELS = (
    ("total loss", ("loss",)),
    ("retrieval loss (in-batch softmax)", ("retrieval_loss",)),
    ("ranking loss (sigmoid cross-entropy)", ("ranking_loss",)),
    ("ranking AUC", ("auc",)),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp.png"
    figure.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    os.replace(tmp, path)
    return path


def _finite(values: Sequence) -> list:
    return [v if v is not None and math.isfinite(v) else float("nan") for v in values]


def plot_loss_curves(history: Mapping[str, Sequence[float]], path: str) -> str:
    """Per-epoch training (solid) and validation (dashed) curves.

    Args:
      history: `{metric: [value per epoch]}` as in `History.history` (the keys
        `loss`, `retrieval_loss`, `ranking_loss`, `auc`, their `val_` twins and
        `val_recall_at_K` are drawn; others are ignored).
      path: the PNG to write.

    Returns:
      `path`.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    recall_keys = sorted(k for k in history if k.startswith("val_recall_at_"))
    panels = list(_LOSS_PANELS) + (
        [("validation Recall@K", tuple(recall_keys))] if recall_keys else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, keys) in zip(axes[0], panels):
        for key in keys:
            for name, style in ((key, "-"), (f"val_{key}", "--")):
                if name in history and len(history[name]):
                    values = _finite(history[name])
                    axis.plot(range(1, len(values) + 1), values, style, marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axis.lines:
            axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_recall_at_k(report: Mapping, path: str) -> str:
    """Recall@K against K (log scale) from `report["recall_curve"]`, with the
    popularity, ID-only and oracle Recall@K points where the report has them.

    Args:
      report: an `evaluate` report (needs its `recall_curve` section).
      path: the PNG to write.

    Returns:
      `path`.
    """
    curve = report["recall_curve"]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.2, 3.8))
    axis.plot(curve["k"], _finite(curve["recall"]), marker="o", label="model")
    retrieval = report.get("retrieval", {})
    for name in ("oracle", "id_only"):
        points = sorted((int(key.rsplit("@", 1)[1]), value) for key, value in retrieval.items()
                        if key.startswith(f"{name}_recall@") and value is not None)
        if points:
            axis.plot(*zip(*points), "s--", label=name)
    popularity = sorted((int(key.rsplit("@", 1)[1]), value) for key, value in report.get("popularity", {}).items()
                        if key.startswith("recall@") and value is not None)
    if popularity:
        axis.plot(*zip(*popularity), "^:", label="popularity")
    axis.set_xscale("log")
    axis.set_ylim(0, 1)
    axis.set_xlabel("K (videos retrieved from the whole catalog)")
    axis.set_ylabel("Recall@K on test clicks")
    axis.set_title("Retrieval: Recall@K")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_calibration(report: Mapping, path: str) -> str:
    """A reliability diagram of the click probability from `report["calibration"]`:
    the observed click rate of each probability bin against its mean predicted
    probability, the diagonal, and the impressions per bin.

    Args:
      report: an `evaluate` report (needs its `calibration` section).
      path: the PNG to write.

    Returns:
      `path`.
    """
    table = report["calibration"]
    plt = _pyplot()
    figure, (axis, counts) = plt.subplots(2, 1, figsize=(4.8, 5.4), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    axis.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    axis.plot(table["mean_predicted"], table["observed_rate"], marker="o", label="model")
    ece: Optional[float] = table.get("ece")
    axis.set_title("Click probability calibration" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    axis.set_ylabel("observed click rate")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    widths = [u - lo for lo, u in zip(table["bin_lower"], table["bin_upper"])]
    counts.bar(table["bin_lower"], table["count"], width=widths, align="edge", alpha=0.6)
    counts.set_yscale("log")
    counts.set_xlabel("predicted click probability")
    counts.set_ylabel("impressions")
    return _save(figure, path)
