"""Preprocessing learned from data: vocabularies, WordPiece, normalisation statistics.

These live inside the model (as lookup layers and constants), so an exported
SavedModel takes raw features. `adapt` learns them all from the catalog and the
training impressions. May import `tfrec_video.data` and the base modules.
"""

from tfrec_video.features.pca import fit_pca
from tfrec_video.features.vocabulary import Vocabularies, adapt
from tfrec_video.features.wordpiece import learn_title_vocabulary, RESERVED_TOKENS

__all__ = ["Vocabularies", "adapt", "fit_pca", "learn_title_vocabulary", "RESERVED_TOKENS"]
