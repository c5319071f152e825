"""Serving fuzz: 10,000 random requests against the loaded SavedModel's signatures.

The export is a watch model's (click and watch heads), which has every signature,
`rank_weighted` included; seven of them are fuzzed (see `EXAMPLES`). Random
batches (0 to 6 rows) of every input a client can send: known, unknown, empty and
huge ids and titles in any script, histories of known and unknown ids, any int64
hour, media vectors with NaN, inf and huge values, and any float as a request
option (`recommend_diverse`'s `diversity`, `rank_weighted`'s `click_weight` and
`watch_weight`). No request may crash a signature, and every output must be
finite and shaped as the signature promises; a served list holds distinct
videos, in the order of its `score` (but for a diverse one). Hypothesis runs
derandomized, so the requests are the same every run.
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
# 10,000 requests in all, spread over seven signatures (`recommend_excluding` and `retrieve_excluding` run the
# code of `serving_default` and `retrieve` with one more input).
EXAMPLES = {"serving_default": 2000, "retrieve": 1500, "rank": 1500, "embed_query": 1500, "embed_video": 1500,
            "recommend_diverse": 1000, "rank_weighted": 1000}
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, -0.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf")]))
# Per-request options: any float (FLOATS: NaN, inf, huge), and as often one in or near their range.
REQUEST_OPTIONS = ("diversity", "click_weight", "watch_weight")
OPTION_FLOATS = st.one_of(FLOATS, st.floats(-1.0, 2.0, width=32))
# The signatures that return a served list, and what each of them returns (a watch model's export).
LISTS = ("serving_default", "recommend_excluding", "recommend_diverse", "rank_weighted")
LIST_OUTPUTS = ("video_ids", "click_probability", "retrieval_score", "score", "expected_watch_fraction",
                "expected_watch_seconds")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    catalog, impressions = toy_data(watch=True)
    model = small_model(catalog, impressions, epochs=1, ranking_objectives=("click", "watch"))
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
        assert spec.dtype == tf.float32, spec
        cell = OPTION_FLOATS if spec.name in REQUEST_OPTIONS else FLOATS
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


def _check(name, outputs, batch, request=None):
    """Every output has `batch` rows and finite floats; a list has its length, distinct videos, probabilities
    in [0, 1] and (but for `recommend_diverse` with a diversity above 0 in `request`) a descending `score`."""
    for key, value in outputs.items():
        value = value.numpy()
        assert value.shape[0] == batch, (name, key, value.shape)
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), (name, key)
    if name in LISTS:
        assert outputs["video_ids"].shape == (batch, N)
        for key, value in outputs.items():
            assert value.shape == (batch, N), (name, key, value.shape)
        for row in outputs["video_ids"].numpy():
            assert len(set(row)) == N, (name, row)
        for key in ("click_probability", "expected_watch_fraction"):
            if key in outputs:
                value = outputs[key].numpy()
                assert np.all((value >= 0) & (value <= 1)), (name, key, value)
        if "expected_watch_seconds" in outputs:
            assert np.all(outputs["expected_watch_seconds"].numpy() >= 0), name
        if "score" in outputs:
            ordered = np.ones(batch, bool)
            if name == "recommend_diverse":  # the score order where diversity is 0 (NaN and inf count as 0)
                diversity = np.asarray(request["diversity"]) if request is not None else np.ones(batch)
                ordered = ~(np.isfinite(diversity) & (diversity > 0))
            assert np.all(np.diff(outputs["score"].numpy()[ordered], axis=1) <= 0), (name, outputs["score"])
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

    if signature in LISTS:
        assert sorted(fn.structured_outputs) == sorted(LIST_OUTPUTS)
    for name in REQUEST_OPTIONS:
        if name in spec:  # any float: the FLOATS strategy
            assert spec[name].dtype == tf.float32 and spec[name].shape.as_list() == [None], (name, spec[name])

    @settings(max_examples=int(EXAMPLES[signature] * float(os.environ.get("FUZZ_SCALE", "1"))), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_requests(spec, known))
    def run(request):
        batch = next(iter(request.values())).shape[0]
        outputs = fn(**{name: tf.constant(value, spec[name].dtype) for name, value in request.items()})
        _check(signature, outputs, batch, request)

    run()
