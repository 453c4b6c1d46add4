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
    from tfcartoon.config import load_config

    return load_config(SMOKE, TINY + list(overrides))


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
