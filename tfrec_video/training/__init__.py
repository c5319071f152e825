"""Training: `fit_model` and `TrainingConfig`, the Keras callbacks, and a run's config file.

`fit` (adapt, build, compile, `model.fit`, under any `tf.distribute` strategy),
`callbacks` (`RetrievalRecall`, `EmbeddingProjector`), `head_selection` (each head from
its own best validation epoch), `calibration` (Platt scaling of clicks), `list_blend`
(fitting the served order), `baselines` (the report's click MLP), `run_config`
(`RunConfig`, the YAML/JSON file of `tfrec-video train`; its `data:` section is
`data_config`), and for `tfrec-video tune`:
`search_space` (the `tune:` section), `pruning` (`TrialPruning`, a Keras callback) and
`study` (the Optuna study: storage, trials of dead processes, summary plot; Optuna is
imported only when used). May import models, towers, features, evaluation, data and the
base modules; never serving or cli.
"""

from tfrec_video.training.baselines import click_mlp_baseline
from tfrec_video.training.calibration import ClickCalibration, calibrate_clicks, fit_platt
from tfrec_video.training.callbacks import EmbeddingProjector, RetrievalRecall
from tfrec_video.training.fit import (
    PRECISION_POLICIES,
    TrainingConfig,
    click_counts,
    dtype_policy,
    fit_model,
    video_counts,
)
from tfrec_video.training.head_selection import HeadSelection
from tfrec_video.training.list_blend import fit_list_blend
from tfrec_video.training.pruning import TrialPruning
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
from tfrec_video.training.search_space import DEFAULT_SPACE, SearchParam, TuneConfig, tune_config_from_dict

__all__ = [
    "CallbackConfig",
    "ClickCalibration",
    "DEFAULT_SPACE",
    "DataConfig",
    "EmbeddingProjector",
    "ExportConfig",
    "HeadSelection",
    "PRECISION_POLICIES",
    "RetrievalRecall",
    "RunConfig",
    "SearchParam",
    "TrainingConfig",
    "TrialPruning",
    "TuneConfig",
    "apply_overrides",
    "calibrate_clicks",
    "click_counts",
    "click_mlp_baseline",
    "dtype_policy",
    "dump_run_config",
    "fit_list_blend",
    "fit_model",
    "fit_platt",
    "load_run_config",
    "run_config_from_dict",
    "tune_config_from_dict",
    "video_counts",
]
