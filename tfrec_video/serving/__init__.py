"""Serving: a trained model into a TF Serving SavedModel, and an export loaded back.

`export` (`ServingModule`, `export_saved_model`), `refresh` (`refresh_catalog`: the next version of
an export with a new catalog, same weights), `versions` (version directories:
umask modes, concurrent writers, stale temporary directories), `warmup` (the warmup requests),
`loaded` (`ExportedModel`: an export behind the interface evaluation uses) and
`scann` (approximate retrieval, in process only). May import models, towers,
training, features, evaluation, data and the base modules; never media_embedding or cli.
"""

from tfrec_video.serving.export import ServingModule, export_saved_model, next_version
from tfrec_video.serving.loaded import ExportedModel
from tfrec_video.serving.refresh import latest_export_version, refresh_catalog
from tfrec_video.serving.scann import ScannRetriever
from tfrec_video.serving.warmup import WARMUP_FILE, warmup_requests, write_warmup_requests

__all__ = [
    "ExportedModel",
    "ScannRetriever",
    "ServingModule",
    "WARMUP_FILE",
    "export_saved_model",
    "latest_export_version",
    "next_version",
    "refresh_catalog",
    "warmup_requests",
    "write_warmup_requests",
]
