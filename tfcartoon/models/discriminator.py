"""U-GAT-IT patch discriminators with a CAM head and a group classifier.

Discriminators always compute in float32 (float64 under a float64 policy): spectral
normalisation under float16 was measured to produce NaN kernels, so they ignore a mixed
global policy.
"""

import keras

from tfcartoon.layers.cam import CAMScore, ChannelSum
from tfcartoon.layers.init import torch_kernel_initializer
from tfcartoon.layers.padding import ReflectionPad2D
from tfcartoon.models.generator import validate_groups
from tfcartoon.precision import at_least_float32

KINDS = {"global": 7, "local": 5}


def _sn_conv(x, filters, stride, name, use_bias=True):
    """Reflection pad 1 then a spectrally normalised 4x4 conv."""
    dtype = at_least_float32()
    x = ReflectionPad2D(1, name=f"{name}_pad", dtype=dtype)(x)
    layer = keras.layers.Conv2D(filters, 4, strides=stride, padding="valid", use_bias=use_bias,
                                kernel_initializer=torch_kernel_initializer(), dtype=dtype,
                                name=name)
    return keras.layers.SpectralNormalization(layer, name=f"{name}_sn", dtype=dtype)(x)


def _leaky_relu(x, name):
    return keras.layers.LeakyReLU(0.2, name=name, dtype=at_least_float32())(x)


@keras.saving.register_keras_serializable(package="tfcartoon")
class PatchDiscriminator(keras.Model):
    """Global (7 layers) or local (5 layers) discriminator for photos or cartoons.

    Called on images (B, S, S, 3) in [-1, 1]; returns ``{"patch_logit": (B, h, w, 1),
    "cam_logit": (B, 2), "group_logit": (B, n_groups), "heatmap": (B, h', w', 1)}``.

    Args:
        kind: "global" or "local".
        groups: group names; the classification head has one output per group.
        ndf: base width (32 in the reference).
        image_size: square input size, or None for any size.
        n_layers: depth; defaults to the reference's (7 for global, 5 for local). The
            input must be at least ``min_image_size(n_layers)`` pixels wide, so small
            test images need a shallower global discriminator.
    """

    def __init__(self, kind, groups, ndf=32, image_size=None, n_layers=None, **kwargs):
        if kind not in KINDS:
            raise ValueError(f"discriminator kind must be one of {sorted(KINDS)}, got {kind!r}")
        groups = validate_groups(groups)
        n_layers = KINDS[kind] if n_layers is None else n_layers
        if not isinstance(n_layers, int) or n_layers < 3:
            raise ValueError(f"n_layers must be an integer >= 3, got {n_layers!r}")
        if image_size is not None and image_size < min_image_size(n_layers):
            raise ValueError(
                f"a {n_layers}-layer {kind} discriminator needs images of at least "
                f"{min_image_size(n_layers)} px, got image_size={image_size}; use fewer layers"
            )

        # === Functional model ===
        image = keras.Input((image_size, image_size, 3), name="image", dtype=at_least_float32())
        x = _leaky_relu(_sn_conv(image, ndf, 2, "conv0"), "conv0_lrelu")
        for index in range(1, n_layers - 2):
            x = _sn_conv(x, ndf * 2 ** index, 2, f"conv{index}")
            x = _leaky_relu(x, f"conv{index}_lrelu")
        index = n_layers - 2
        x = _leaky_relu(_sn_conv(x, ndf * 2 ** index, 1, f"conv{index}"), f"conv{index}_lrelu")
        channels = ndf * 2 ** index
        x, cam_logit = CAMScore(use_bias=False, spectral_norm=True, name="cam", dtype=at_least_float32())(x)
        x = keras.layers.Conv2D(channels, 1, use_bias=True, name="cam_conv1x1", dtype=at_least_float32(),
                                kernel_initializer=torch_kernel_initializer())(x)
        x = _leaky_relu(x, "cam_lrelu")
        heatmap = ChannelSum(name="heatmap", dtype=at_least_float32())(x)
        pooled = keras.layers.GlobalAveragePooling2D(name="group_pool", dtype=at_least_float32())(x)
        group_logit = keras.layers.SpectralNormalization(
            keras.layers.Dense(len(groups), use_bias=False, name="group_fc", dtype=at_least_float32(),
                               kernel_initializer=torch_kernel_initializer()),
            name="group_fc_sn", dtype=at_least_float32())(pooled)
        patch_logit = _sn_conv(x, 1, 1, "patch_conv", use_bias=False)
        super().__init__(
            inputs=image,
            outputs={"patch_logit": patch_logit, "cam_logit": cam_logit,
                     "group_logit": group_logit, "heatmap": heatmap},
            **kwargs,
        )

        # === Config ===
        self.kind = kind
        self.groups = groups
        self.ndf = ndf
        self.image_size = image_size
        self.n_layers = n_layers

    def get_config(self):
        return {"kind": self.kind, "groups": list(self.groups), "ndf": self.ndf,
                "image_size": self.image_size, "n_layers": self.n_layers, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def min_image_size(n_layers):
    """Smallest input for which the last reflection pad still has 2 pixels to mirror."""
    return 3 * 2 ** (n_layers - 2)


def build_discriminator(kind, groups, ndf=32, image_size=None, n_layers=None, name=None):
    """Build a global or local discriminator (see ``PatchDiscriminator``)."""
    return PatchDiscriminator(kind, groups, ndf=ndf, image_size=image_size, n_layers=n_layers,
                              name=name or f"{kind}_discriminator")
