"""What every signature of an export does to a request before the model sees it: shape checks and sane values.

Neither TF Serving nor a loaded signature holds a request to the signature's
shapes, and a client may send any float. `guarded(fn)` wraps a signature's
function so that:

* each input's rank and fixed widths, then its batch size against the first
  input's, are checked in the graph, and a mismatch is an
  `InvalidArgumentError` naming the input, what was expected and what came,
  e.g. `history: expected shape [batch, <= 20], got [2, 25]`
  (`checked_features`); a `history` narrower than exported is padded with `""`
  (`PADDED_LISTS`), the answer the client padding it would get;
* a non-finite float becomes 0 and a finite one is clipped to
  +-`MAX_FLOAT_INPUT`, so 3e38 cannot overflow a tower to inf;
* an empty batch runs on one placeholder row whose outputs are dropped again,
  so it returns empty outputs of the promised shapes.

Example:

>>> import tensorflow as tf
>>> fn = tf.function(guarded(lambda f: {"y": f["x"] * 2}),
...                  input_signature=[{"x": tf.TensorSpec([None], tf.float32, name="x")}])
>>> fn({"x": tf.constant([1.0, float("nan"), 3e38])})["y"].numpy().tolist()
[2.0, 0.0, 2000000.0]
"""

from typing import Dict

import tensorflow as tf

# Float inputs beyond this magnitude are clipped: far outside any embedding or duration, and small
# enough that no tower overflows float32 on them.
MAX_FLOAT_INPUT = 1e6


# List inputs a request may send narrower than exported: they are padded with "" in the graph (what a
# client padding them itself gets). Wider ones are refused: cutting them would drop ids silently.
PADDED_LISTS = ("history",)
# The input whose batch size the others must match, when the signature has it.
_BATCH_REFERENCES = ("user_id", "video_id")


def _shape_text(dims) -> tf.Tensor:
    """`"[2, 25]"`: a shape vector as a string tensor, for an error message."""
    return tf.strings.join(["[", tf.strings.reduce_join(tf.strings.as_string(dims), separator=", "), "]"])


def checked_features(features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """`features` after graph checks of their runtime shapes against the signature's, `PADDED_LISTS` padded.

    Callers (a TF Serving client, `tf.saved_model.load`) are not held to the signature's shapes: a
    `[batch, 1]` `user_id` or a 25-wide `history` reaches the graph, and fails deep inside it naming
    no input, or is silently pooled. Each input is checked for its rank and fixed widths, then for
    the batch size of the first input, in a fixed order (each check waits for the one before, so
    the message is deterministic), and every op that reads an input runs after the checks. A
    failure is an `InvalidArgumentError` whose message holds `<name>: expected ..., got ...` (no
    quotes: TF's `Assert` would print them escaped).

    The runtime shape goes through `boolean_mask`, whose output length is unknown to shape
    inference: Grappler would otherwise fold `Size(Shape(x))` to the signature's rank.
    """
    names = ([name for name in _BATCH_REFERENCES if name in features]
             + sorted(name for name in features if name not in _BATCH_REFERENCES))
    reference = names[0]
    check = tf.no_op()
    batch, runtime = None, {}
    for name in names:
        value, spec = features[name], features[name].shape
        with tf.control_dependencies([check]):
            shape = tf.shape(value, out_type=tf.int64)
            dims = tf.boolean_mask(shape, shape >= 0)
            # Indexable whatever the rank really is: a missing dimension reads as -1.
            padded = runtime[name] = tf.concat([dims, tf.fill([spec.rank], tf.constant(-1, tf.int64))], 0)
            ok = tf.equal(tf.size(dims), spec.rank)
            widths = []
            for axis in range(1, spec.rank):
                width = spec[axis]
                if width is None:
                    widths.append("m")
                    continue
                fits = padded[axis] <= width if name in PADDED_LISTS else tf.equal(padded[axis], width)
                ok = tf.logical_and(ok, fits)
                widths.append(f"<= {width}" if name in PADDED_LISTS else str(width))
            expected = f"{name}: expected shape [{', '.join(['batch'] + widths)}], got "
            check = tf.debugging.Assert(ok, [tf.strings.join([expected, _shape_text(dims)])], name=f"check_{name}")
        if batch is None:
            batch = padded[0]
            continue
        with tf.control_dependencies([check]):
            message = tf.strings.join([f"{name}: expected batch size ", tf.strings.as_string(batch),
                                       f" (that of {reference}), got shape ", _shape_text(dims)])
            check = tf.debugging.Assert(tf.equal(padded[0], batch), [message], name=f"check_{name}_batch")
    checked = {}
    with tf.control_dependencies([check]):
        for name, value in features.items():
            if name in PADDED_LISTS:
                width = value.shape[1]
                short = tf.maximum(width - runtime[name][1], 0)
                value = tf.ensure_shape(tf.pad(value, [[0, 0], [0, short]], constant_values=""), [None, width])
            checked[name] = tf.identity(value)
    return checked


def guarded(fn):
    """`fn(features)` made total over serving requests: shapes are checked (`checked_features`), non-finite
    floats become 0, finite ones are clipped to +-MAX_FLOAT_INPUT, and an empty batch runs on one
    placeholder row (some layers cannot trace a zero-row batch) whose output rows are dropped again."""

    def sane(value):
        value = tf.where(tf.math.is_finite(value), value, tf.zeros_like(value))
        return tf.clip_by_value(value, -MAX_FLOAT_INPUT, MAX_FLOAT_INPUT)

    def guarded(features):
        features = checked_features(features)
        features = {name: sane(value) if value.dtype.is_floating else value for name, value in features.items()}
        batch = tf.shape(next(iter(features.values())))[0]
        placeholder = {name: tf.zeros(tf.concat([[1], tf.shape(value)[1:]], 0), value.dtype)
                       if value.dtype != tf.string else tf.fill(tf.concat([[1], tf.shape(value)[1:]], 0), "")
                       for name, value in features.items()}
        padded = tf.cond(batch > 0, lambda: features, lambda: placeholder)
        return tf.nest.map_structure(lambda out: out[:batch], fn(padded))

    return guarded
