"""Helpers shared by the tests: tiny sizes and access to ../shared data."""

import numpy as np
import pytest
from PIL import Image

from tfcartoon.paths import ENV_VAR, shared_path

GROUPS = ["young_women", "young_men", "kids", "elderly"]


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
    """Small smooth random images in DIR/<group>/{photos,cartoons}."""
    rng = np.random.default_rng(0)
    for group in groups:
        for domain in ("photos", "cartoons"):
            folder = root / group / domain
            folder.mkdir(parents=True)
            for index in range(count):
                small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((80, 80), Image.BILINEAR)
                image.save(folder / f"{index:03d}.png")
    return root
