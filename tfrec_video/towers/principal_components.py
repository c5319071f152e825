"""`PrincipalComponents`: a fixed PCA-whitening projection of an embedding, in the graph.

The statistics come from `tfrec_video.features.pca.fit_pca` in the adapt step
(see that module for why media embeddings are reduced before training); this
layer applies them, so the exported model takes the raw embedding. Its weights
are constants, not trained: the point is to keep the projection from fitting
the idiosyncrasies of the training videos.

    x ──(x - mean) @ components / scale──► [batch, k]

Example:

>>> import numpy as np, tensorflow as tf
>>> layer = PrincipalComponents(mean=[1.0, 0.0], components=[[1.0], [0.0]], scale=[2.0])
>>> layer(tf.constant([[5.0, 7.0]])).numpy().tolist()
[[2.0]]
"""

from typing import Sequence

import numpy as np
import tensorflow as tf


class PrincipalComponents(tf.keras.layers.Layer):
    """Projects `[batch, dim]` onto `k` standardised principal components.

    Args:
      mean: `[dim]` mean subtracted first.
      components: `[dim, k]` orthonormal directions.
      scale: `[k]` standard deviation along each direction.
    """

    def __init__(self, mean: Sequence[float], components: Sequence[Sequence[float]], scale: Sequence[float],
                 **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.mean = np.asarray(mean, np.float32)
        self.components = np.asarray(components, np.float32)
        self.scale = np.asarray(scale, np.float32)
        if self.components.ndim != 2 or self.components.shape != (len(self.mean), len(self.scale)):
            raise ValueError(f"PrincipalComponents {self.name}: components must be [{len(self.mean)}, "
                             f"{len(self.scale)}], got {list(self.components.shape)}.")
        self.num_components = int(len(self.scale))

    def call(self, x):
        x = tf.cast(x, tf.float32) - self.mean
        return tf.matmul(x, self.components) / tf.maximum(self.scale, 1e-12)

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)
        config.update(mean=self.mean.tolist(), components=self.components.tolist(), scale=self.scale.tolist())
        return config
