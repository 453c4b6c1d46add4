import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts under the float32 policy and leaves it that way."""
    import keras

    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


# Training runs shared by several test modules (each costs about a minute of graph
# building on a CPU, so they are built once per session).

@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """../shared/data/fourgroups when present (the smoke acceptance), else made-up images."""
    from tfcartoon.paths import shared_path
    from tests.helpers import make_dataset

    shared = shared_path("data", "fourgroups")
    return shared if shared is not None else make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def face_id_file(tmp_path_factory):
    """The shared face-ID model when present, else a small stand-in with its contract."""
    from tfcartoon.paths import shared_path
    from tests.helpers import tiny_face_embedder

    shared = shared_path("models", "face_id", "squeezenet_fp32.tflite")
    if shared is not None:
        return shared
    return tiny_face_embedder(tmp_path_factory.mktemp("face_id") / "tiny_face_id.keras")


@pytest.fixture(scope="session")
def base_run(data_dir, tmp_path_factory):
    from tfcartoon.training.run import train
    from tests.helpers import BASE, tiny_config

    run = tmp_path_factory.mktemp("runs") / "base"
    train(tiny_config(*BASE), data_dir, run)
    return run


@pytest.fixture(scope="session")
def elderly_run(data_dir, base_run, tmp_path_factory):
    from tfcartoon.training.run import train
    from tests.helpers import ELDERLY, tiny_config

    run = tmp_path_factory.mktemp("runs") / "elderly"
    train(tiny_config(*ELDERLY), data_dir, run, init=base_run)
    return run
