"""The embedding step: raw thumbnails and audio → pretrained `image_embedding` / `audio_embedding` features.

* `decode`: media files to float images and framed mono waveforms (tf.io, tensorflow-io).
* `log_mel`: the log-mel front end of spectrogram-input audio models (YAMNet), in core TF ops.
* `encoders`: TF Hub handles, SavedModels and `.tflite` files (waveform or log-mel input) as `MediaModel`s.
* `step`: `run_embed`, what `tfrec-video embed` runs (sharded, resumable output).

The output joins into the catalog with `tfrec_video.data.media_embeddings.attach_embeddings`.
May import towers (the in-graph encoders' loading conventions), data and the base modules.
"""

from tfrec_video.media_embedding.decode import MediaError, frames, read_audio, read_image
from tfrec_video.media_embedding.encoders import MediaModel, load_audio_model, load_image_model
from tfrec_video.media_embedding.log_mel import LogMelFrontEnd
from tfrec_video.media_embedding.step import EmbedSummary, read_media_csv, run_embed

__all__ = ["EmbedSummary", "LogMelFrontEnd", "MediaError", "MediaModel", "frames", "load_audio_model",
           "load_image_model", "read_audio", "read_image", "read_media_csv", "run_embed"]
