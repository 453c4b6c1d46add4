"""Atomic checkpoints of a run: every weight and optimizer slot, one file per step.

A checkpoint is ``RUN/checkpoints/step-XXXXXXXX.npz``; ``RUN/checkpoints/index.json``
lists them in order and is the only thing read to find the latest. Both are written
to a temporary file in the same folder and moved into place with ``os.replace``, so
an interrupted write never leaves a half checkpoint behind.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

INDEX = "index.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not fit the model it is loaded into."""


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generator_components(generator):
    """Named parts of a generator: shared trunk and each group's branch pieces."""
    parts = {"shared_encoder": generator.encoder, "shared_decoder": generator.decoder}
    for name in generator.groups:
        head, cam, tail = generator.group_branches(name)
        parts.update({f"head_{name}": head, f"cam_{name}": cam, f"tail_{name}": tail})
    return parts


def _pack(prefix, variables, state):
    for index, variable in enumerate(variables):
        state[f"{prefix}/{index:04d}"] = np.asarray(variable.numpy())


def gan_state(gan, step):
    """All weights and optimizer variables of a CartoonGAN as a flat dict of arrays."""
    state = {"step": np.asarray(step, np.int64)}
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        for part, layer in generator_components(getattr(gan, gen_name)).items():
            _pack(f"{gen_name}/{part}", layer.weights, state)
    for name, disc in gan.discriminators.items():
        _pack(name, disc.weights, state)
    _pack("generator_optimizer", gan.generator_optimizer.variables, state)
    _pack("discriminator_optimizer", gan.discriminator_optimizer.variables, state)
    return state


def _unpack(prefix, variables, state, source):
    keys = sorted(k for k in state if k.startswith(prefix + "/"))
    if len(keys) != len(variables):
        raise CheckpointError(
            f"{source}: {prefix} has {len(keys)} arrays, the model expects {len(variables)}; "
            "was it written with another config (groups, ngf, image_size)?")
    for key, variable in zip(keys, variables):
        value = state[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(f"{source}: {key} has shape {value.shape}, the model "
                                  f"expects {tuple(variable.shape)}")
        variable.assign(value)


def restore_generator(generator, state, gen_name, source, parts=None):
    """Load ``parts`` (default: all) of a generator from a checkpoint state."""
    for part, layer in generator_components(generator).items():
        if parts is None or part in parts:
            _unpack(f"{gen_name}/{part}", layer.weights, state, source)


def restore_weights(model, state, prefix, source):
    """Load the weights of one model (e.g. a discriminator by its name) from a state."""
    _unpack(prefix, model.weights, state, source)


def restore_gan(gan, state, source):
    """Load every weight and optimizer variable; returns the checkpoint's step."""
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        restore_generator(getattr(gan, gen_name), state, gen_name, source)
    for name, disc in gan.discriminators.items():
        _unpack(name, disc.weights, state, source)
    _unpack("generator_optimizer", gan.generator_optimizer.variables, state, source)
    _unpack("discriminator_optimizer", gan.discriminator_optimizer.variables, state, source)
    return int(state["step"])


def read_index(run_dir):
    path = Path(run_dir) / "checkpoints" / INDEX
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["checkpoints"]


def latest_checkpoint(run_dir):
    """Path of the newest checkpoint of a run, or None."""
    entries = read_index(run_dir)
    return Path(run_dir) / "checkpoints" / entries[-1]["file"] if entries else None


def load_state(path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def save_checkpoint(run_dir, gan, step, keep=3):
    """Write the checkpoint of ``step`` atomically, update the index, prune old ones."""
    folder = Path(run_dir) / "checkpoints"
    name = f"step-{step:08d}.npz"
    state = gan_state(gan, step)
    _atomic_write(folder / name, lambda handle: np.savez(handle, **state))
    entries = [e for e in read_index(run_dir) if e["step"] != step]
    entries.append({"step": step, "file": name})
    stale, entries = entries[:-keep], entries[-keep:]
    payload = json.dumps({"checkpoints": entries}, indent=1).encode()
    _atomic_write(folder / INDEX, lambda handle: handle.write(payload))
    for entry in stale:
        (folder / entry["file"]).unlink(missing_ok=True)
    return folder / name
