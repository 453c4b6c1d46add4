"""tfcartoon: few-shot fine-grained cartoon faces in TensorFlow/Keras 3.

Public entry points:

- ``build_generator(groups, ngf=32, image_size=256)``: the multi-group generator.
- ``build_discriminator(kind, groups, ndf=32)``: a global or local discriminator.
- ``load(run_dir)``: the trained generators of a run (``.photo2cartoon``, ``.cartoon2photo``).
- ``load_preset(name="young_women")``: a trained model shipped with the package.
- ``load_face_embedder(path)``: the frozen face-recognition model (.tflite or .keras).

TensorFlow's C++ log lines (``failed call to cuInit``, grappler's ``remapper failed``)
are hidden unless ``TF_CPP_MIN_LOG_LEVEL`` is set (``TF_CPP_MIN_LOG_LEVEL=0`` shows them
all). The entry points above are imported on first use, so ``--help`` of every command
answers without loading TensorFlow.
"""

import importlib

from tfcartoon import _quiet

_quiet.install()

__version__ = "0.1.0"

_ENTRY_POINTS = {
    "build_discriminator": "tfcartoon.models.discriminator",
    "build_generator": "tfcartoon.models.generator",
    "load": "tfcartoon.training.run",
    "load_face_embedder": "tfcartoon.models.face_id",
    "load_preset": "tfcartoon.preset",
}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name):
    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfcartoon' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
