"""Training: `fit_model` and `TrainingConfig`, the Keras callbacks, and a run's config file.

`fit` (adapt, build, compile, `model.fit`, under any `tf.distribute` strategy),
`callbacks` (`RetrievalRecall`, `EmbeddingProjector`) and `run_config` (`RunConfig`,
the YAML/JSON file of `tfrec-video train`). May import models, towers, features,
evaluation, data and the base modules; never serving or cli.
"""

from tfrec_video.training.callbacks import EmbeddingProjector, RetrievalRecall
from tfrec_video.training.fit import (
    PRECISION_POLICIES,
    TrainingConfig,
    click_counts,
    dtype_policy,
    fit_model,
    video_counts,
)
from tfrec_video.training.run_config import (
    CallbackConfig,
    DataConfig,
    ExportConfig,
    RunConfig,
    apply_overrides,
    dump_run_config,
    load_run_config,
    run_config_from_dict,
)

__all__ = [
    "CallbackConfig",
    "DataConfig",
    "EmbeddingProjector",
    "ExportConfig",
    "PRECISION_POLICIES",
    "RetrievalRecall",
    "RunConfig",
    "TrainingConfig",
    "apply_overrides",
    "click_counts",
    "dtype_policy",
    "dump_run_config",
    "fit_model",
    "load_run_config",
    "run_config_from_dict",
    "video_counts",
]
