"""tfcartoon: few-shot fine-grained cartoon faces in TensorFlow/Keras 3.

Public entry points:

- ``build_generator(groups, ngf=32, image_size=256)``: the multi-group generator.
- ``build_discriminator(kind, groups, ndf=32)``: a global or local discriminator.
"""

from tfcartoon.models.discriminator import build_discriminator
from tfcartoon.models.generator import build_generator

__version__ = "0.1.0"

__all__ = ["build_discriminator", "build_generator"]
