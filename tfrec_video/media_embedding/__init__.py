"""The embedding step: raw thumbnails, audio and titles → pretrained `image_embedding` / `audio_embedding` /
`title_embedding` features.

* `decode`: media files to float images and framed mono waveforms (tf.io, tensorflow-io).
* `log_mel`: the log-mel front end of spectrogram-input audio models (YAMNet), in core TF ops.
* `encoders`: TF Hub handles, SavedModels and `.tflite` files (waveform or log-mel input) as `MediaModel`s,
  and text encoders (string -> vector SavedModels) as `TextModel`s.
* `titles`: where `--text-model`'s titles come from (the media CSV's `title` column or `--titles TABLE`).
* `shards`: one shard embedded into its table (shared by both ways of running), its file and its marker.
* `step`: `run_embed`, what `tfrec-video embed` runs (sharded, resumable output), in process or on Beam.
* `beam_embed`: the shards embedded by an Apache Beam pipeline (`--runner`); imported only then.

The output joins into the catalog with `tfrec_video.data.media_embeddings.attach_embeddings`.
May import towers (the in-graph encoders' loading conventions), data and the base modules.
"""

from tfrec_video.media_embedding.decode import MediaError, frames, read_audio, read_image
from tfrec_video.media_embedding.encoders import MediaModel, TextModel, load_audio_model, load_image_model, load_text_model
from tfrec_video.media_embedding.log_mel import LogMelFrontEnd
from tfrec_video.media_embedding.step import EmbedSummary, read_media_csv, run_embed

__all__ = ["EmbedSummary", "LogMelFrontEnd", "MediaError", "MediaModel", "TextModel", "frames", "load_audio_model",
           "load_image_model", "load_text_model", "read_audio", "read_image", "read_media_csv", "run_embed"]
