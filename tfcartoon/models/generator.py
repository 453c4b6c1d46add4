"""The photo2cartoon generator with per-group branches around one shared trunk.

Group ``g`` maps a photo through ``T^g(x) = G^g(G^S(E^S(E^g(x))))``:

- ``E^g`` (group head): ConvBlock1 + HourGlass1, at full resolution;
- ``E^S`` (shared encoder): HourGlass2, two down blocks, four residual blocks;
- the CAM scoring pair (two Dense(C->1)) belongs to the group;
- ``G^S`` (shared decoder): CAM 1x1 conv, style MLP, four SoftAdaLIN blocks, two up
  blocks, HourGlass3;
- ``G^g`` (group tail): HourGlass4 (to RGB) + ConvBlock2 + tanh.

A batch may mix groups: each sample runs through its own group's branches.
"""

import functools
import re

import keras
import numpy as np
from keras import ops

from tfcartoon.layers.blocks import (
    apply_down_block,
    apply_hourglass,
    apply_resnet_block,
    apply_soft_adalin_block,
    apply_up_block,
    conv,
    in_relu,
)
from tfcartoon.layers.cam import CAMScore, ChannelSum
from tfcartoon.layers.init import torch_kernel_initializer
from tfcartoon.layers.routing import GroupSwitch
from tfcartoon.precision import at_least_float32

GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


AUTO_GROUP = "auto"


def validate_groups(groups):
    """Return ``groups`` as a list of names, or raise ValueError saying what is wrong."""
    if isinstance(groups, str) or not hasattr(groups, "__iter__"):
        raise ValueError(f"groups must be a list of group names, got {groups!r}")
    groups = list(groups)
    if not groups:
        raise ValueError("groups must name at least one group (the base group first), got []")
    for name in groups:
        if not isinstance(name, str) or not GROUP_NAME.match(name):
            raise ValueError(
                f"group name {name!r} is invalid: expected lowercase letters, digits and "
                "underscores, starting with a letter (e.g. 'young_women')"
            )
    if AUTO_GROUP in groups:
        raise ValueError(f"group name {AUTO_GROUP!r} is reserved: --group {AUTO_GROUP} lets the "
                         "group classifier pick each face's group; choose another name")
    duplicates = sorted({name for name in groups if groups.count(name) > 1})
    if duplicates:
        raise ValueError(f"group names must be unique, got duplicates {duplicates} in {groups}")
    return groups


def validate_image_size(image_size):
    """Image sizes must be positive multiples of 16 (the hourglass pools four times)."""
    if not isinstance(image_size, int) or image_size < 32 or image_size % 16:
        raise ValueError(
            f"image_size must be an integer multiple of 16 and at least 32, got {image_size!r}"
        )
    return image_size


def build_group_head(ngf, image_size, name, depth=4):
    """E^g: pad3, conv7x7 3->ngf, IN, ReLU, then HourGlass1."""
    image = keras.Input((image_size, image_size, 3), name="image")
    x = in_relu(conv(image, ngf, 7, "conv_block1_conv", pad=3), "conv_block1")
    x = apply_hourglass(x, ngf, "hourglass1", depth=depth)
    return keras.Model(image, x, name=name)


def build_group_tail(ngf, image_size, name, depth=4):
    """G^g: HourGlass4 (to 3 channels), pad3, conv7x7 3->3, tanh in float32 (float64
    under a float64 policy)."""
    features = keras.Input((image_size, image_size, ngf), name="features")
    x = apply_hourglass(features, ngf, "hourglass4", residual=False, depth=depth)
    x = conv(x, 3, 7, "conv_block2_conv", pad=3)
    image = keras.layers.Activation("tanh", dtype=at_least_float32(), name="tanh")(x)
    return keras.Model(features, image, name=name)


def build_shared_encoder(ngf, image_size, depth=4):
    """E^S: HourGlass2, two down blocks, four residual blocks and their content features."""
    features = keras.Input((image_size, image_size, ngf), name="features")
    x = apply_hourglass(features, ngf, "hourglass2", depth=depth)
    x = apply_down_block(x, ngf * 2, "down_block1")
    x = apply_down_block(x, ngf * 4, "down_block2")
    content = []
    for index in range(1, 5):
        x = apply_resnet_block(x, f"encode_block{index}")
        content.append(keras.layers.GlobalAveragePooling2D(name=f"content{index}")(x))
    return keras.Model(features, [x, *content], name="shared_encoder")


def build_shared_decoder(ngf, image_size, depth=4):
    """G^S: CAM 1x1 conv and heatmap, style MLP, SoftAdaLIN blocks, up blocks, HourGlass3.

    Inputs: the CAM-weighted features (2 * 4ngf channels) and the four content features.
    Outputs: full-resolution features (ngf channels) and the CAM heatmap.
    """
    size = image_size // 4
    cam_features = keras.Input((size, size, ngf * 8), name="cam_features")
    content = [keras.Input((ngf * 4,), name=f"content{index}") for index in range(1, 5)]
    x = conv(cam_features, ngf * 4, 1, "cam_conv1x1", use_bias=True)
    x = keras.layers.ReLU(name="cam_relu")(x)
    heatmap = ChannelSum(name="heatmap")(x)
    style = keras.layers.GlobalAveragePooling2D(name="style_pool")(x)
    for index in (1, 2):
        style = keras.layers.Dense(ngf * 4, activation="relu", name=f"style_fc{index}",
                                   kernel_initializer=torch_kernel_initializer())(style)
    for index in range(1, 5):
        x = apply_soft_adalin_block(x, content[4 - index], style, f"decode_block{index}")
    x = apply_up_block(x, ngf * 2, "up_block1")
    x = apply_up_block(x, ngf, "up_block2")
    x = apply_hourglass(x, ngf, "hourglass3", depth=depth)
    return keras.Model([cam_features, *content], [x, heatmap], name="shared_decoder")


def group_path(image, head, encoder, cam, decoder, tail):
    """T^g(x) = G^g(G^S(E^S(E^g(x)))): the one place the group path is written.

    ``head``, ``cam`` and ``tail`` are the group's pieces as callables: one group's
    layers (``group_model``), a switch on a group input (the generator's call),
    per-slot routing (``route``) or ``tf.cond`` branches (the multi-group export).
    ``cam`` returns (features, cam_logit). Returns (cartoon, cam_logit, heatmap).
    """
    x = head(image)
    x, *content = encoder(x)
    x, cam_logit = cam(x)
    x, heatmap = decoder([x, *content])
    return tail(x), cam_logit, heatmap


@keras.saving.register_keras_serializable(package="tfcartoon")
class CartoonGenerator(keras.Model):
    """Multi-group photo2cartoon generator (one shared trunk, one branch per group).

    Called on ``{"image": (B, S, S, 3) float in [-1, 1], "group": (B,) int}`` and
    returns ``{"image": (B, S, S, 3) in [-1, 1], "cam_logit": (B, 2), "heatmap":
    (B, S/4, S/4, 1)}``. ``group_model(name)`` gives the deployable single-group path.

    Args:
        groups: group names, the base group first (e.g. young_women, young_men, ...).
        ngf: base width (32 in the reference).
        image_size: square input size, a multiple of 16 (256 in the reference).
        hourglass_depth: pooling levels of every hourglass (4 in the reference). Fewer
            levels make a much smaller graph; the test suite uses 1 to keep TensorFlow's
            graph building fast. Parameter counts above assume 4.
    """

    def __init__(self, groups, ngf=32, image_size=256, hourglass_depth=4, **kwargs):
        groups = validate_groups(groups)
        image_size = validate_image_size(image_size)
        if not isinstance(ngf, int) or ngf < 4 or ngf % 4:
            raise ValueError(f"ngf must be a positive multiple of 4, got {ngf!r}")
        if hourglass_depth not in (1, 2, 3, 4):
            raise ValueError(f"hourglass_depth must be 1, 2, 3 or 4, got {hourglass_depth!r}")
        depth = hourglass_depth

        # === Layers ===
        heads = [build_group_head(ngf, image_size, f"head_{name}", depth) for name in groups]
        cams = [CAMScore(name=f"cam_{name}") for name in groups]
        tails = [build_group_tail(ngf, image_size, f"tail_{name}", depth) for name in groups]
        encoder = build_shared_encoder(ngf, image_size, depth)
        decoder = build_shared_decoder(ngf, image_size, depth)

        # === Functional model ===
        image = keras.Input((image_size, image_size, 3), name="image")
        group = keras.Input((), dtype="int32", name="group")
        switches = [GroupSwitch(layers, name=f"{part}_switch")
                    for part, layers in (("head", heads), ("cam", cams), ("tail", tails))]
        head, cam, tail = (lambda x, s=s: s(x, group) for s in switches)
        cartoon, cam_logit, heatmap = group_path(image, head, encoder, cam, decoder, tail)
        super().__init__(
            inputs={"image": image, "group": group},
            outputs={"image": cartoon, "cam_logit": cam_logit, "heatmap": heatmap},
            **kwargs,
        )

        # === Config ===
        self.groups = groups
        self.ngf = ngf
        self.image_size = image_size
        self.hourglass_depth = hourglass_depth
        self.heads, self.cams, self.tails = heads, cams, tails
        self.encoder, self.decoder = encoder, decoder
        # Deployable single-group models, built on demand; kept out of weight tracking.
        object.__setattr__(self, "_group_models", {})

    def group_index(self, name):
        """Index of group ``name``; raises ValueError listing the known groups."""
        if name not in self.groups:
            raise ValueError(f"unknown group {name!r}: this generator has groups {self.groups}")
        return self.groups.index(name)

    def group_branches(self, name):
        """The group's own layers: head E^g, CAM scoring pair and tail G^g."""
        index = self.group_index(name)
        return [self.heads[index], self.cams[index], self.tails[index]]

    def group_variables(self, name):
        """Trainable variables that belong to group ``name`` only."""
        return [v for layer in self.group_branches(name) for v in layer.trainable_variables]

    @property
    def shared_variables(self):
        """Trainable variables shared by every group (the trunk)."""
        owned = {id(v) for name in self.groups for v in self.group_variables(name)}
        return [v for v in self.trainable_variables if id(v) not in owned]

    def copy_group(self, source, target):
        """Copy group ``source``'s branch weights into group ``target``'s branch."""
        for src, dst in zip(self.group_branches(source), self.group_branches(target)):
            for src_var, dst_var in zip(src.weights, dst.weights):
                dst_var.assign(src_var)

    def group_model(self, name):
        """Plain functional model photo (B, S, S, 3) in [-1, 1] -> cartoon, for one group.

        It shares its weights with this generator.
        """
        index = self.group_index(name)
        if name not in self._group_models:
            image = keras.Input((self.image_size, self.image_size, 3), name="image")
            cartoon, _, _ = group_path(image, self.heads[index], self.encoder,
                                       self.cams[index], self.decoder, self.tails[index])
            self._group_models[name] = keras.Model(image, cartoon, name=f"{self.name}_{name}")
        return self._group_models[name]

    def route(self, image, slots):
        """Training path for a batch whose group layout is known when tracing.

        ``slots`` lists each sample's group index (a Python list). Same outputs as
        calling the model with ``group=slots``, but samples are grouped by a fixed
        permutation and only the branches in ``slots`` are traced, with no dynamic
        partitioning: graph building and the backward pass stay small.
        """
        slots = [int(s) for s in slots]
        if not slots or min(slots) < 0 or max(slots) >= len(self.groups):
            raise ValueError(f"slots must be group indices in [0, {len(self.groups)}), "
                             f"got {slots}")
        order = sorted(range(len(slots)), key=lambda i: slots[i])
        runs = [(g, slots.count(g)) for g in sorted(set(slots))]
        permuted = order != list(range(len(slots)))
        if permuted:
            image = ops.take(image, order, axis=0)

        def per_group(branches, x):
            if len(runs) == 1:
                return branches[runs[0][0]](x)
            parts = ops.split(x, np.cumsum([n for _, n in runs])[:-1].tolist(), axis=0)
            outs = [branches[g](part) for (g, _), part in zip(runs, parts)]
            if isinstance(outs[0], (tuple, list)):
                return [ops.concatenate(list(t), axis=0) for t in zip(*outs)]
            return ops.concatenate(outs, axis=0)

        cartoon, cam_logit, heatmap = group_path(
            image, functools.partial(per_group, self.heads), self.encoder,
            functools.partial(per_group, self.cams), self.decoder,
            functools.partial(per_group, self.tails))
        outputs = {"image": cartoon, "cam_logit": cam_logit, "heatmap": heatmap}
        if permuted:
            inverse = np.argsort(order).tolist()
            outputs = {k: ops.take(v, inverse, axis=0) for k, v in outputs.items()}
        return outputs

    def get_config(self):
        return {"groups": list(self.groups), "ngf": self.ngf, "image_size": self.image_size,
                "hourglass_depth": self.hourglass_depth, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_generator(groups, ngf=32, image_size=256, hourglass_depth=4, name="generator"):
    """Build the multi-group generator (see ``CartoonGenerator``)."""
    return CartoonGenerator(groups, ngf=ngf, image_size=image_size,
                            hourglass_depth=hourglass_depth, name=name)
