"""tfcartoon: few-shot fine-grained cartoon faces in TensorFlow/Keras 3.

Public entry points:

- ``build_generator(groups, ngf=32, image_size=256)``: the multi-group generator.
- ``build_discriminator(kind, groups, ndf=32)``: a global or local discriminator.
- ``load(run_dir)``: the trained generators of a run (``.photo2cartoon``, ``.cartoon2photo``).
- ``load_face_embedder(path)``: the frozen face-recognition model (.tflite or .keras).
"""

from tfcartoon.models.discriminator import build_discriminator
from tfcartoon.models.face_id import load_face_embedder
from tfcartoon.models.generator import build_generator
from tfcartoon.training.run import load

__version__ = "0.1.0"

__all__ = ["build_discriminator", "build_generator", "load", "load_face_embedder"]
