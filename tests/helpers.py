"""Helpers shared by the tests: tiny sizes and access to ../shared data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfcartoon.paths import ENV_VAR, shared_path

GROUPS = ["young_women", "young_men", "kids", "elderly"]
SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
# configs/smoke.yaml (64 px, ngf 8, hourglass depth 1, face-ID on when ../shared has the
# model) with checkpoints every 2 steps and op determinism for the resume test.
TINY = ["train.log_every=2", "train.image_every=2", "train.checkpoint_every=2",
        "train.keep_checkpoints=3", "train.deterministic=true"]
BASE = ["train.stage=base", "train.steps=4"]
ELDERLY = ["train.stage=fewshot", "train.group=elderly", "train.steps=4"]


def tiny_config(*overrides):
    """configs/smoke.yaml at test sizes. Without the shared face-ID model the face-ID loss
    is switched off explicitly (``face_id.model=null``); a configured but missing model
    is an error."""
    from tfcartoon.config import load_config

    face_id = [] if shared_path("models", "face_id", "squeezenet_fp32.tflite") else [
        "face_id.model=null"]
    return load_config(SMOKE, TINY + face_id + list(overrides))


def require_shared(*parts):
    """Return the path of ``../shared/<parts>``; skip the test when it is absent."""
    path = shared_path(*parts)
    if path is None:
        pytest.skip(
            f"shared data {'/'.join(parts)!r} not found (set ${ENV_VAR} or place "
            "the shared folder beside the repository)"
        )
    return path


def make_dataset(root, groups=GROUPS, count=3):
    """Small smooth random images in DIR/<group>/{photos,cartoons,val/photos,val/cartoons}.

    The two val folders hold the same file names (pairs), as the evaluation expects.
    """
    rng = np.random.default_rng(0)
    for group in groups:
        for domain in ("photos", "cartoons", "val/photos", "val/cartoons"):
            folder = root / group / domain
            folder.mkdir(parents=True)
            for index in range(count):
                small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((80, 80), Image.BILINEAR)
                image.save(folder / f"{index:03d}.png")
    return root


def tiny_face_embedder(path):
    """Write a small random face-ID stand-in, (B, 112, 112, 3) -> (B, 128), to ``path``.

    For tests that need *an* embedder with the real one's contract (an evaluation report,
    a face-ID loss), not its judgement of identity.
    """
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((112, 112, 3), name="image")
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embedding = keras.layers.Dense(128)(x)
    keras.Model(image, embedding, name="tiny_face_id").save(path)
    return path
