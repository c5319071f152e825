"""Datasets shipped with tfrec_video: the built-in synthetic dataset with a planted truth.

`datasets/` holds the built-in dataset (`datasets/builtin/`: generator, raw media,
planted truth). It may import only `tfrec_video.data`, `tfrec_video.evaluation.metrics`
and the base modules `tfrec_video.errors` / `tfrec_video.config_fields`; never
features, towers, models, training, serving or cli.

* `BuiltinConfig`: sizes, seed and every noise level of the benchmark.
* `generate(out_dir, config)`: writes catalog, train/test impressions, raw media
  and the ground truth; `ensure_builtin()` caches it by config hash.
* `GroundTruth`, `oracle_auc`: the true click model, for oracle metrics.
* `day_files`, `benchmark_days`: the daily service's one table a day
  (`BuiltinConfig.daily()`), for daily-retraining loops.

Example:

>>> from tfrec_video.datasets import BuiltinConfig, ensure_builtin, load_manifest  # doctest: +SKIP
>>> path = ensure_builtin(config=BuiltinConfig.tiny())                               # doctest: +SKIP
>>> load_manifest(path)["files"]["train"]                                           # doctest: +SKIP
"""

from tfrec_video.datasets import builtin
from tfrec_video.datasets.builtin import *  # noqa: F401,F403  (exactly the names of builtin.__all__)

__all__ = list(builtin.__all__)
