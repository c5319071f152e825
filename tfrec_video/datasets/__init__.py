"""Datasets shipped with tfrec_video: the built-in synthetic dataset with a planted truth.

* `BuiltinConfig`: sizes, seed and every noise level of the benchmark.
* `generate(out_dir, config)`: writes catalog, train/test impressions, raw media
  and the ground truth; `ensure_builtin()` caches it by config hash.
* `GroundTruth`, `oracle_auc`: the true click model, for oracle metrics.

Example:

>>> from tfrec_video.datasets import BuiltinConfig, ensure_builtin, load_manifest  # doctest: +SKIP
>>> path = ensure_builtin(config=BuiltinConfig.tiny())                               # doctest: +SKIP
>>> load_manifest(path)["files"]["train"]                                           # doctest: +SKIP
"""

from tfrec_video.datasets.builtin import (
    DATASET_VERSION,
    FILLER_WORDS,
    LANGUAGES,
    MANIFEST,
    TOPICS,
    BuiltinConfig,
    Topic,
    add_cli,
    default_cache_dir,
    ensure_builtin,
    generate,
    load_manifest,
    run_generate_cli,
    summary,
)
from tfrec_video.datasets.truth import DEVICES, GroundTruth, auc, oracle_auc

__all__ = [
    "BuiltinConfig",
    "DATASET_VERSION",
    "DEVICES",
    "FILLER_WORDS",
    "GroundTruth",
    "LANGUAGES",
    "MANIFEST",
    "TOPICS",
    "Topic",
    "add_cli",
    "auc",
    "default_cache_dir",
    "ensure_builtin",
    "generate",
    "load_manifest",
    "oracle_auc",
    "run_generate_cli",
    "summary",
]
