"""Towers: raw features in, embeddings out. Each layer here round-trips through `get_config`.

One Keras layer per module: the query and candidate towers and their parts (id
embeddings, the title CNN, the pretrained title encoder, history pooling, PCA
whitening, media encoders and their byte checks), `CatalogTable`, and the ranking
stage's `MixtureOfExperts`. May import features, data and the base modules.
"""

from tfrec_video.towers.candidate import CandidateTower
from tfrec_video.towers.catalog_table import CatalogTable
from tfrec_video.towers.click_counts import ClickCounts
from tfrec_video.towers.embedding_tower import EmbeddingTower
from tfrec_video.towers.history_pooling import HistoryPooling
from tfrec_video.towers.id_embedding import IdEmbedding
from tfrec_video.towers.mixture_of_experts import MixtureOfExperts
from tfrec_video.towers.mlp import MLP
from tfrec_video.towers.pretrained_title import PretrainedTitleEncoder
from tfrec_video.towers.principal_components import PrincipalComponents
from tfrec_video.towers.query import QueryTower
from tfrec_video.towers.target_attention import TargetAttention
from tfrec_video.towers.title_encoder import TitleEncoder

__all__ = ["CandidateTower", "CatalogTable", "ClickCounts", "EmbeddingTower", "HistoryPooling", "IdEmbedding", "MixtureOfExperts", "MLP",
           "PretrainedTitleEncoder", "PrincipalComponents", "QueryTower", "TargetAttention", "TitleEncoder"]
