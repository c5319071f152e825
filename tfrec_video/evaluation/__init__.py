"""Evaluation: metrics, the whole-catalog ranker, the report and its plots.

`metrics` (plain numpy), `ranking` (`CatalogRanker`, `embed_catalog`), `candidates`
(`catalog_rows` of video ids, and `top_k_excluding`, the rule that leaves videos out of a
list, shared with the export), `served` (`served_lists`), `report` (`evaluate`,
`format_table`, `write_report`) and `plots` (PNG figures of a report).
May import `tfrec_video.data` and the base modules only: it works on arrays and on
any model with `embed_videos` / `embed_queries`, never on a model class, so training's
callbacks and the built-in dataset's oracle can use it.
"""

from tfrec_video.evaluation.candidates import catalog_index, catalog_rows, mask_rows, top_k_excluding
from tfrec_video.evaluation.metrics import (
    CALIBRATION_BINS,
    CURVE_KS,
    DEFAULT_KS,
    auc,
    calibration,
    logloss,
    recall_curve,
    retrieval_metrics,
)
from tfrec_video.evaluation.ranking import CatalogRanker, embed_catalog, ranks_from_scores
from tfrec_video.evaluation.report import TABLE_ROWS, evaluate, format_table, write_report

__all__ = [
    "CALIBRATION_BINS",
    "CURVE_KS",
    "CatalogRanker",
    "DEFAULT_KS",
    "TABLE_ROWS",
    "auc",
    "calibration",
    "catalog_index",
    "catalog_rows",
    "embed_catalog",
    "evaluate",
    "format_table",
    "logloss",
    "mask_rows",
    "ranks_from_scores",
    "recall_curve",
    "retrieval_metrics",
    "top_k_excluding",
    "write_report",
]
