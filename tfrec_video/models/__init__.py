"""The two-stage model: configuration, ranking head, `VideoRecModel` and its saving; the ID-only baseline.

`config` (`ModelConfig`), `ranking_head`, `video_rec` (the `tfrs.Model` with both
tasks), `saving` (`model.json` + checkpoint) and `id_only` (the plain TFRS two-tower
baseline). May import towers, features, data and the base modules.
"""

from tfrec_video.models.config import ModelConfig
from tfrec_video.models.id_only import IdOnlyTwoTower, fit_id_only_baseline
from tfrec_video.models.ranking_head import RankingHead
from tfrec_video.models.saving import load_model, save_model
from tfrec_video.models.video_rec import VideoRecModel

__all__ = ["IdOnlyTwoTower", "ModelConfig", "RankingHead", "VideoRecModel", "fit_id_only_baseline", "load_model", "save_model"]
