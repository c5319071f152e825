"""The log-mel front end of spectrogram-input audio models (YAMNet), in core TF ops.

A model such as `yamnet_spectra_in.tflite` takes a log-mel *patch*
`[frames, mel_bands]` (YAMNet: 96 frames of 10 ms by 64 bands, 0.96 s), not a
waveform. `LogMelFrontEnd` computes those patches from a mono waveform in
[-1, 1] at `sample_rate`, as YAMNet's own front end does:

* `tf.signal.stft(frame_length=400, frame_step=160, fft_length=512)` (25 ms
  Hann windows every 10 ms at 16 kHz, no padding), magnitude;
* `tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0)`;
* `log(mel + 0.001)`.

**Patches.** One patch covers `patch_frames` frames, i.e.
`patch_samples = (patch_frames - 1) * frame_step + frame_length` samples
(15,600 = 0.975 s for YAMNet). A longer clip is cut into patches every
`patch_hop` frames (48 = 0.48 s); when the last of them stops short of the
clip's end, one more patch ending at the last frame is added, so every frame
is covered and no silence is mixed into a long clip (YAMNet's TF Hub model
pads that tail with silence instead). A clip shorter than one patch is padded
with silence (zeros) at the end to `patch_samples`: one patch, not an error.
The embedding step averages the patches' embeddings.

Example:

>>> import numpy as np
>>> front = LogMelFrontEnd()
>>> front.patch_samples
15600
>>> front.patches(np.zeros(48000, np.float32)).shape   # 3 s: patches at frames 0, 48, ..., 192 and 202
(6, 96, 64)
"""

import dataclasses
import functools
from typing import Dict

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class LogMelFrontEnd:
    """Log-mel patches of a waveform (module docstring); defaults are YAMNet's.

    Attributes:
      sample_rate: the waveform's rate in Hz (the mel scale's reference).
      frame_length / frame_step / fft_length: the STFT, in samples.
      mel_bands: mel bands per frame (the model's last input axis).
      lower_hertz / upper_hertz: the mel filterbank's edges.
      log_offset: added before the log, so silence stays finite.
      patch_frames: frames per patch (the model's frame axis).
      patch_hop: frames between the starts of consecutive patches.
    """

    sample_rate: int = 16000
    frame_length: int = 400
    frame_step: int = 160
    fft_length: int = 512
    mel_bands: int = 64
    lower_hertz: float = 125.0
    upper_hertz: float = 7500.0
    log_offset: float = 0.001
    patch_frames: int = 96
    patch_hop: int = 48

    def __post_init__(self):
        for name in ("sample_rate", "frame_length", "frame_step", "fft_length", "mel_bands", "patch_frames",
                     "patch_hop"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"LogMelFrontEnd: {name} must be positive, got {getattr(self, name)!r}.")
        if self.fft_length < self.frame_length:
            raise ValueError(f"LogMelFrontEnd: fft_length {self.fft_length} is shorter than frame_length "
                             f"{self.frame_length}.")
        if not 0 <= self.lower_hertz < self.upper_hertz <= self.sample_rate / 2:
            raise ValueError(f"LogMelFrontEnd: the mel edges must satisfy 0 <= lower < upper <= sample_rate / 2, "
                             f"got {self.lower_hertz}, {self.upper_hertz} at {self.sample_rate} Hz.")

    @property
    def patch_samples(self) -> int:
        """Samples one patch covers (the shortest clip that is not padded)."""
        return (self.patch_frames - 1) * self.frame_step + self.frame_length

    def options(self) -> Dict[str, float]:
        """Every parameter, JSON-ready (the embed step records them so that a resumed run cannot mix front ends)."""
        return dataclasses.asdict(self)

    @functools.cached_property
    def _log_mel(self):
        # Built once per front end; one trace serves every clip length (the sample axis is unknown).
        mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            self.mel_bands, self.fft_length // 2 + 1, self.sample_rate, self.lower_hertz, self.upper_hertz)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def log_mel(waveform):
            magnitude = tf.abs(tf.signal.stft(waveform, frame_length=self.frame_length,
                                              frame_step=self.frame_step, fft_length=self.fft_length))
            return tf.math.log(tf.matmul(magnitude, mel_matrix) + self.log_offset)

        return log_mel

    def spectrogram(self, waveform: np.ndarray) -> np.ndarray:
        """float32 `[frames, mel_bands]` of a mono waveform (none for a clip shorter than one STFT frame).

        Args:
          waveform: float `[samples]` in [-1, 1] at `sample_rate`.
        """
        return self._log_mel(tf.constant(np.asarray(waveform, np.float32).reshape(-1))).numpy()

    def patches(self, waveform: np.ndarray) -> np.ndarray:
        """The clip as float32 `[patches, patch_frames, mel_bands]` (module docstring: padding and the last patch).

        Args:
          waveform: float `[samples]` in [-1, 1] at `sample_rate`.

        Returns:
          At least one patch.
        """
        waveform = np.asarray(waveform, np.float32).reshape(-1)
        if len(waveform) < self.patch_samples:
            waveform = np.pad(waveform, (0, self.patch_samples - len(waveform)))
        spectrogram = self.spectrogram(waveform)
        last = len(spectrogram) - self.patch_frames
        starts = list(range(0, last + 1, self.patch_hop))
        if starts[-1] != last:
            starts.append(last)
        return np.stack([spectrogram[s:s + self.patch_frames] for s in starts])
