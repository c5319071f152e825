"""Serving fuzz: 10,000 random requests against the loaded SavedModel's signatures.

Random batches (0 to 6 rows) of every input a client can send: known, unknown,
empty and huge ids and titles in any script, histories of known and unknown ids,
any int64 hour, and media vectors with NaN, inf and huge values. No request may
crash a signature, and every output must be finite and shaped as the signature
promises. Hypothesis runs derandomized, so the requests are the same every run.
"""

import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tfrec_video.serving import export as export_lib  # noqa: E402
from toy import small_model, toy_data  # noqa: E402

K, N = 8, 4
# 10,000 requests in all, spread over the five signatures.
EXAMPLES = {"serving_default": 2500, "retrieve": 2000, "rank": 2000, "embed_query": 1500, "embed_video": 2000}
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, -0.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf")]))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=1)
    base = tmp_path_factory.mktemp("fuzz") / "saved_models"
    version_dir = export_lib.export_saved_model(model, catalog, str(base), name="video_rec", k=K, n=N)
    loaded = tf.saved_model.load(version_dir)
    return catalog, impressions, loaded


def _texts(known):
    return st.one_of(
        st.sampled_from(list(known)),
        st.text(max_size=40),
        st.just(""),
        st.text(alphabet="猫足球烹饪 \t\n\u200b\U0001F600é", max_size=30),
        st.builds(lambda word, times: word * times, st.sampled_from(["cat ", "猫", "x"]), st.integers(500, 20000)),
    )


def _column(spec, known, batch):
    """A strategy for one input tensor of `batch` rows matching `spec`."""
    inner = spec.shape.as_list()[1:]
    width = int(np.prod(inner)) if inner else 1
    if spec.dtype == tf.string:
        cell = _texts(known.get(spec.name, ()))
        to_array = lambda v: np.array(v, dtype=object)  # noqa: E731
    elif spec.dtype == tf.int64:
        cell = st.integers(-(2 ** 63), 2 ** 63 - 1)
        to_array = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    else:
        cell = FLOATS
        to_array = lambda v: np.array(v, dtype=np.float32)  # noqa: E731
    return st.lists(cell, min_size=batch * width, max_size=batch * width).map(
        lambda values: to_array(values).reshape([batch] + inner))


def _requests(spec, known):
    names = sorted(spec)

    @st.composite
    def request(draw):
        batch = draw(st.integers(0, 6))
        return {name: draw(_column(spec[name], known, batch)) for name in names}

    return request()


def _check(name, outputs, batch):
    for key, value in outputs.items():
        value = value.numpy()
        assert value.shape[0] == batch, (name, key, value.shape)
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), (name, key)
    if name == "serving_default":
        assert outputs["video_ids"].shape == (batch, N)
        assert np.all((outputs["click_probability"].numpy() >= 0) & (outputs["click_probability"].numpy() <= 1))
    if name == "retrieve":
        assert outputs["video_ids"].shape == (batch, K)


@pytest.mark.slow
@pytest.mark.parametrize("signature", sorted(EXAMPLES))
def test_random_requests_crash_nothing_and_give_finite_outputs(served, signature):
    catalog, impressions, loaded = served
    fn = loaded.signatures[signature]
    spec = fn.structured_input_signature[1]
    known = {"user_id": impressions["user_id"][:20], "video_id": catalog["video_id"][:20],
             "history": catalog["video_id"][:20], "title": catalog["title"][:10],
             "device": ["phone", "tv", "desktop"], "category": catalog["category"][:5]}

    @settings(max_examples=int(EXAMPLES[signature] * float(os.environ.get("FUZZ_SCALE", "1"))), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_requests(spec, known))
    def run(request):
        batch = next(iter(request.values())).shape[0]
        _check(signature, fn(**{name: tf.constant(value, spec[name].dtype) for name, value in request.items()}), batch)

    run()
