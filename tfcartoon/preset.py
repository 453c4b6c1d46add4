"""Trained models shipped inside the package (presets), and how they are made.

A preset is a folder ``tfcartoon/presets/<name>/``:

- ``weights.npz``: both base-group generators (photo -> cartoon and cartoon -> photo),
  trunk and base branch, in float16, keyed by role and variable path
  (``photo2cartoon/head/conv_block1_conv/kernel``), not by position;
- ``preset.json``: the model sizes, the base group, where the weights came from (run,
  step, checkpoint hash) and the figures measured on held-out pairs;
- ``MODEL_CARD.md``: training data and its licence, recipe, figures.

``load_preset(name)`` builds float32 generators with only the base group and loads
the weights; ``--init preset:NAME`` starts stage two from them (the base branch is
copied into every new group). ``python -m tfcartoon.preset RUN_DIR --name NAME``
writes a preset from a training run.
"""

import argparse
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np

from tfcartoon.training.checkpoints import relative_path

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESET_PREFIX = "preset:"
DEFAULT_PRESET = "young_women"
WEIGHTS_FILE = "weights.npz"
META_FILE = "preset.json"
GENERATORS = ("photo2cartoon", "cartoon2photo")
ROLES = ("shared_encoder", "shared_decoder", "head", "cam", "tail")


class PresetError(ValueError):
    """A preset is unknown, incomplete or does not fit the model it is loaded into."""


def available_presets():
    """Names of the presets shipped with the package."""
    if not PRESET_DIR.is_dir():
        return []
    return sorted(p.name for p in PRESET_DIR.iterdir() if (p / WEIGHTS_FILE).is_file())


def preset_path(name):
    """Folder of preset ``name``; PresetError listing the shipped presets otherwise."""
    folder = PRESET_DIR / str(name)
    if not (folder / WEIGHTS_FILE).is_file():
        shipped = available_presets()
        raise PresetError(f"unknown preset {name!r}; shipped presets: "
                          f"{', '.join(shipped) if shipped else 'none'}")
    return folder


def parse_preset_ref(text):
    """'preset:young_women' -> 'young_women'; anything else -> None."""
    text = str(text)
    return text[len(PRESET_PREFIX):] if text.startswith(PRESET_PREFIX) else None


def _role_layers(generator, group):
    head, cam, tail = generator.group_branches(group)
    return {"shared_encoder": generator.encoder, "shared_decoder": generator.decoder,
            "head": head, "cam": cam, "tail": tail}


def branch_state(generator, gen_name, group, dtype=np.float16):
    """Trunk and ``group``'s branch of ``generator`` as {key: array}, keyed by role/path."""
    state = {}
    for role, layer in _role_layers(generator, group).items():
        for variable in layer.weights:
            key = f"{gen_name}/{role}/{relative_path(variable, layer)}"
            if key in state:
                raise PresetError(f"two variables share the key {key!r}")
            state[key] = np.asarray(variable.numpy()).astype(dtype)
    return state


def restore_branch(generator, state, gen_name, group, source, roles=ROLES):
    """Load the trunk and one branch from ``branch_state`` output into ``group``'s branch.

    Every variable must find its key with the same shape; extra keys are refused too,
    so a preset made from a different architecture never loads half-way.
    """
    expected = set()
    for role, layer in _role_layers(generator, group).items():
        if role not in roles:
            continue
        for variable in layer.weights:
            key = f"{gen_name}/{role}/{relative_path(variable, layer)}"
            expected.add(key)
            if key not in state:
                raise PresetError(f"{source}: no weights for {key!r}; the preset was made for "
                                  "another architecture (ngf, hourglass_depth)")
            value = state[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise PresetError(f"{source}: {key} has shape {tuple(value.shape)}, the model "
                                  f"expects {tuple(variable.shape)}")
            variable.assign(value.astype(np.float32))
    prefixes = tuple(f"{gen_name}/{role}/" for role in roles)
    extra = sorted(k for k in state if k.startswith(prefixes) and k not in expected)
    if extra:
        raise PresetError(f"{source}: {len(extra)} weights fit no variable of the model, e.g. "
                          f"{extra[0]!r}; the preset was made for another architecture")


def read_preset(name):
    """(metadata dict, weights dict) of preset ``name``."""
    folder = preset_path(name)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    with np.load(folder / WEIGHTS_FILE) as data:
        state = {key: data[key] for key in data.files}
    return meta, state


def load_preset(name=DEFAULT_PRESET, image_size=None):
    """The preset's generators, float32, with its base group only.

    Returns a namespace like ``tfcartoon.load(run_dir)``: ``photo2cartoon``,
    ``cartoon2photo`` (``CartoonGenerator``), ``config`` (the training run's config
    with ``groups`` reduced to the base group and ``model.image_size`` the preset's, or
    ``image_size``: no weight depends on it), ``step``, ``checkpoint`` (the preset's
    weights file) and ``meta``.
    """
    from tfcartoon.config import config_from_dict
    from tfcartoon.models.generator import build_generator
    from tfcartoon.precision import dtype_policy

    meta, state = read_preset(name)
    settings = meta["config"]
    if image_size is not None:  # the data resize follows, in proportion
        old = settings["model"]["image_size"]
        resize = max(int(image_size), round(settings["data"]["resize"] * int(image_size) / old))
        settings = {**settings, "model": {**settings["model"], "image_size": int(image_size)},
                    "data": {**settings["data"], "resize": resize}}
    config = config_from_dict(settings)
    model, group = config.model, config.base_group
    source = f"preset {name!r}"
    generators = {}
    with dtype_policy("float32"):
        for gen_name in GENERATORS:
            generator = build_generator([group], model.ngf, model.image_size,
                                        model.hourglass_depth, name=gen_name)
            restore_branch(generator, state, gen_name, group, source)
            generators[gen_name] = generator
    return types.SimpleNamespace(config=config, step=int(meta["step"]),
                                 checkpoint=preset_path(name) / WEIGHTS_FILE, meta=meta,
                                 **generators)


def init_from_preset(gan, name):
    """Stage start from a preset: its trunk and base branch, copied to every group."""
    from tfcartoon.training.run import TrainingError

    try:
        meta, state = read_preset(name)
    except PresetError as error:
        raise TrainingError(f"--init {PRESET_PREFIX}{name}: {error}") from None
    config = gan.config
    for key in ("ngf", "hourglass_depth"):
        if getattr(config.model, key) != meta["config"]["model"][key]:
            raise TrainingError(f"--init {PRESET_PREFIX}{name} has model.{key}="
                                f"{meta['config']['model'][key]}, this run has "
                                f"{getattr(config.model, key)}")
    base = config.base_group
    if base != meta["config"]["groups"][0]:
        raise TrainingError(f"--init {PRESET_PREFIX}{name}: its base group is "
                            f"{meta['config']['groups'][0]!r}, this run's is {base!r}")
    for gen_name in GENERATORS:
        generator = getattr(gan, gen_name)
        try:
            restore_branch(generator, state, gen_name, base, f"preset {name!r}")
        except PresetError as error:
            raise TrainingError(str(error)) from None
        for group in generator.groups[1:]:
            generator.copy_group(base, group)
    return preset_path(name) / WEIGHTS_FILE


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_preset(run_dir, name, image_size=None, figures=None, overwrite=False, root=PRESET_DIR):
    """Write preset ``name`` from the latest checkpoint of ``run_dir``; returns its folder.

    ``image_size`` (default: the run's) is the size the preset is meant to run at;
    ``figures`` (a dict) is stored in ``preset.json``. An existing preset is only
    replaced with ``overwrite``.
    """
    from tfcartoon.training.checkpoints import _atomic_write
    from tfcartoon.training.run import load

    folder = Path(root) / name
    if (folder / WEIGHTS_FILE).exists() and not overwrite:
        raise PresetError(f"preset {str(folder)!r} exists; pass --overwrite to replace it")
    run = load(run_dir)
    base = run.config.base_group
    state = {}
    for gen_name in GENERATORS:
        state.update(branch_state(getattr(run, gen_name), gen_name, base))
    config = run.config.to_dict()
    config["groups"] = [base]
    config["model"]["image_size"] = int(image_size or run.config.model.image_size)
    meta = {"name": name, "step": run.step, "config": config,
            "source": {"run": str(Path(run_dir)), "checkpoint": Path(run.checkpoint).name,
                       "checkpoint_sha256": file_sha256(run.checkpoint)},
            "figures": figures or {}}
    _atomic_write(folder / WEIGHTS_FILE, lambda handle: np.savez_compressed(handle, **state))
    payload = (json.dumps(meta, indent=1) + "\n").encode()
    _atomic_write(folder / META_FILE, lambda handle: handle.write(payload))
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.preset",
        description="Write a preset (float16 base-group generators) from a training run.")
    parser.add_argument("run", type=Path, help="training run directory (its latest checkpoint)")
    parser.add_argument("--name", required=True, help="preset name, e.g. young_women")
    parser.add_argument("--image-size", type=int, help="size the preset runs at "
                        "(default: the run's)")
    parser.add_argument("--figures", type=Path, help="JSON file of measured figures to store")
    parser.add_argument("--root", type=Path, default=PRESET_DIR,
                        help=f"folder of presets (default: {PRESET_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    args = parser.parse_args(argv)
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import TrainingError

    try:
        figures = json.loads(args.figures.read_text()) if args.figures else None
        folder = make_preset(args.run, args.name, args.image_size, figures, args.overwrite,
                             args.root)
    except (PresetError, TrainingError, CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"preset written: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
