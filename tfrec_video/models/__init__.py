"""The two-stage model: configuration, ranking head, `VideoRecModel` and its saving; the ID-only baseline.

`config` (`ModelConfig`), `ranking_head`, `multi_task_head` (click and watch heads over
shared experts) and `watch_loss`, `list_blend` (the served order), `video_rec` (the
`tfrs.Model` with both tasks) and `train_step` (its training step), `served_order` (its
catalog-side stages: the served list from retrieved candidates, shared by the export and
evaluation) and `diversify` (a diverse served list), `dtype_policy`, `saving` (`model.json` + checkpoint),
and the baselines `id_only` (the plain TFRS two-tower) and `click_mlp` (a standalone click
MLP). May import towers, features, data and the base modules.
"""

from tfrec_video.models.click_mlp import ClickMLP, fit_click_mlp_baseline
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.id_only import IdOnlyTwoTower, fit_id_only_baseline
from tfrec_video.models.diversify import maximal_marginal_relevance
from tfrec_video.models.list_blend import ListBlend
from tfrec_video.models.multi_task_head import MultiTaskRankingHead
from tfrec_video.models.ranking_head import RankingHead
from tfrec_video.models.saving import load_model, save_model
from tfrec_video.models.video_rec import VideoRecModel

__all__ = ["ClickMLP", "IdOnlyTwoTower", "ListBlend", "ModelConfig", "MultiTaskRankingHead", "RankingHead",
           "VideoRecModel", "fit_click_mlp_baseline", "fit_id_only_baseline", "load_model",
           "maximal_marginal_relevance", "save_model"]
