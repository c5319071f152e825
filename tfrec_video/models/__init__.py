"""The two-stage model: configuration, ranking head and `VideoRecModel`."""

from tfrec_video.models.config import ModelConfig
from tfrec_video.models.ranking_head import RankingHead
from tfrec_video.models.video_rec import VideoRecModel

__all__ = ["ModelConfig", "RankingHead", "VideoRecModel"]
