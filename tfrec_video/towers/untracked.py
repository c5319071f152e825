"""`untracked`: keeps a large plain list or dict on a layer out of TensorFlow's object tracking.

Keras wraps every list and dict assigned to a layer attribute in a tracking
wrapper, and every traversal of the model (building, `fit`'s first call,
`tf.saved_model.save`) then walks each element looking for variables. A
vocabulary of a million ids made `tf.saved_model.save` take 211 s instead of
15 s and the first `fit` call 35 s instead of 11 s (measured with 300k user and
300k video ids; `benchmarks/scale.py`). Vocabularies and configs hold no
variables, so nothing is lost by not tracking them.

`NoDependency` is TensorFlow's own marker for this (`tf.Module` and Keras
unwrap it on assignment); it has no public alias in TF 2.17, the pinned
version.

Example:

>>> import tfrec_video, tensorflow as tf
>>> layer = tf.keras.layers.Layer()
>>> layer.ids = untracked(["a", "b"])
>>> type(layer.ids).__name__
'list'
"""

from tensorflow.python.trackable.data_structures import NoDependency


def untracked(value):
    """`value`, marked so that assigning it to a layer or module attribute does not track it."""
    return NoDependency(value)
