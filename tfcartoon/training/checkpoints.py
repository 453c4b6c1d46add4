"""Atomic checkpoints of a run: every weight and optimizer slot, one file per step.

A checkpoint is ``RUN/checkpoints/step-XXXXXXXX.npz``; ``RUN/checkpoints/index.json``
lists them in order and is the only thing read to find the latest. Both are written
to a temporary file in the same folder and moved into place with ``os.replace``, so
an interrupted write never leaves a half checkpoint behind.
"""

import json
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tfcartoon.data.images import usual_permissions

INDEX = "index.json"
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not fit the model it is loaded into."""


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        usual_permissions(tmp)
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


# === Keys ===
# Format 2 keys every array by where its variable sits, never by position, so a refactor
# that reorders variables cannot load weights into the wrong place:
#   photo2cartoon/head_kids/<variable path below the head>      weights
#   disc_cartoon_global/<variable path below the discriminator>
#   generator_optimizer/<weight key>/momentum                   optimizer slots
#   generator_optimizer/<optimizer>/iteration                   optimizer's own variables
# Format 1 (keys "<prefix>/0000", by position) is still read.
FORMAT = 2


def relative_path(variable, layer):
    """The variable's path below ``layer`` (the same for every group's branch)."""
    marker = f"{layer.name}/"
    path = variable.path
    return path.split(marker, 1)[1] if marker in path else path


def _layer_entries(prefix, layer):
    entries = [(f"{prefix}/{relative_path(v, layer)}", v) for v in layer.weights]
    keys = [key for key, _ in entries]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise CheckpointError(f"two variables of {prefix} share the key {duplicate!r}")
    return entries


def generator_entries(generator, gen_name, parts=None):
    """(key, variable) for the weights of ``generator`` (or of ``parts`` of it)."""
    return [entry for part, layer in generator_components(generator).items()
            if parts is None or part in parts
            for entry in _layer_entries(f"{gen_name}/{part}", layer)]


def _model_entries(gan):
    entries = []
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        entries += generator_entries(getattr(gan, gen_name), gen_name)
    for name, disc in gan.discriminators.items():
        entries += _layer_entries(name, disc)
    return entries


def _sanitized(variable):
    # Keras names an optimizer slot "<variable path with / as _>_<slot>"
    return variable.path.replace("/", "_")


def optimizer_entries(label, optimizer, model_keys):
    """(key, variable) for every optimizer variable. A slot is keyed by the weight it
    belongs to (``model_keys``: id(variable) -> key); same-named weights of the two
    generators are told apart by the order the optimizer was built in."""
    built_with = {}
    for variable in _built_with(optimizer):
        built_with.setdefault(_sanitized(variable), []).append(model_keys[id(variable)])
    taken = {}
    entries = []
    for variable in optimizer.variables:
        local = variable.path.split("/", 1)[-1]
        cuts = [i for i, ch in enumerate(local) if ch == "_"]
        owner = next((local[:i] for i in reversed(cuts) if local[:i] in built_with), None)
        if owner is None:
            entries.append((f"{label}/{variable.path}", variable))
            continue
        slot = local[len(owner) + 1:]
        index = taken.get((owner, slot), 0)
        taken[(owner, slot)] = index + 1
        entries.append((f"{label}/{built_with[owner][index]}/{slot}", variable))
    return entries


def _built_with(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return list(getattr(inner, "_trainable_variables", []))


def gan_entries(gan):
    """(key, variable) for every weight and optimizer variable of a CartoonGAN."""
    entries = _model_entries(gan)
    model_keys = {id(v): key for key, v in entries}
    entries += optimizer_entries("generator_optimizer", gan.generator_optimizer, model_keys)
    entries += optimizer_entries("discriminator_optimizer", gan.discriminator_optimizer,
                                 model_keys)
    return entries


def gan_state(gan, step):
    """All weights and optimizer variables of a CartoonGAN as a flat dict of arrays."""
    state = {"step": np.asarray(step, np.int64), "format": np.asarray(FORMAT, np.int64)}
    for key, variable in gan_entries(gan):
        if key in state:
            raise CheckpointError(f"two variables share the checkpoint key {key!r}")
        state[key] = np.asarray(variable.numpy())
    return state


def state_format(state):
    return int(state["format"]) if "format" in state else 1


def _assign(key, variable, value, source):
    if tuple(value.shape) != tuple(variable.shape):
        raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model "
                              f"expects {tuple(variable.shape)}")
    variable.assign(value)


def _restore_entries(entries, state, source):
    """Assign every entry from ``state`` by key; a missing key is an error naming it."""
    for key, variable in entries:
        if key not in state:
            raise CheckpointError(
                f"{source}: no array for {key!r}; was it written with another config "
                "(groups, ngf, hourglass_depth, discriminator layers)?")
        _assign(key, variable, state[key], source)


# --- format 1: by position ---

def _unpack_v1(prefix, variables, state, source):
    keys = sorted(k for k in state if k.startswith(prefix + "/"))
    if len(keys) != len(variables):
        raise CheckpointError(
            f"{source}: {prefix} has {len(keys)} arrays, the model expects {len(variables)}; "
            "was it written with another config (groups, ngf, image_size)?")
    for key, variable in zip(keys, variables):
        _assign(key, variable, state[key], source)


def restore_generator(generator, state, gen_name, source, parts=None):
    """Load ``parts`` (default: all) of a generator from a checkpoint state."""
    if state_format(state) == 1:
        for part, layer in generator_components(generator).items():
            if parts is None or part in parts:
                _unpack_v1(f"{gen_name}/{part}", layer.weights, state, source)
        return
    _restore_entries(generator_entries(generator, gen_name, parts), state, source)


def restore_weights(model, state, prefix, source):
    """Load the weights of one model (e.g. a discriminator by its name) from a state."""
    if state_format(state) == 1:
        _unpack_v1(prefix, model.weights, state, source)
        return
    _restore_entries(_layer_entries(prefix, model), state, source)


def restore_gan(gan, state, source):
    """Load every weight and optimizer variable; returns the checkpoint's step.

    Optimizer variables that only one precision has (the loss scale of mixed_float16)
    start fresh when the checkpoint lacks them and are ignored when the model does, so
    a run resumes under another precision with its weights and Adam moments intact.
    """
    if state_format(state) == 1:
        for gen_name in ("photo2cartoon", "cartoon2photo"):
            restore_generator(getattr(gan, gen_name), state, gen_name, source)
        for name, disc in gan.discriminators.items():
            _unpack_v1(name, disc.weights, state, source)
        _unpack_v1("generator_optimizer", gan.generator_optimizer.variables, state, source)
        _unpack_v1("discriminator_optimizer", gan.discriminator_optimizer.variables, state,
                   source)
        return int(state["step"])
    entries = gan_entries(gan)
    wrapper = _wrapper_variables(gan)
    _restore_entries([(k, v) for k, v in entries if id(v) not in wrapper], state, source)
    for key, variable in entries:
        if id(variable) in wrapper and key in state:
            _assign(key, variable, state[key], source)
    known = {key for key, _ in entries} | {"step", "format"}
    extra = sorted(k for k in state if k not in known and f"/{WRAPPER}/" not in k)
    if extra:
        raise CheckpointError(f"{source}: {len(extra)} arrays fit no variable of the model, "
                              f"e.g. {extra[0]!r}; was it written with another config?")
    return int(state["step"])


WRAPPER = "loss_scale_optimizer"


def _wrapper_variables(gan):
    """ids of the variables a LossScaleOptimizer adds around its inner optimizer."""
    ids = set()
    for optimizer in (gan.generator_optimizer, gan.discriminator_optimizer):
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is not None:
            inner_ids = {id(v) for v in inner.variables}
            ids |= {id(v) for v in optimizer.variables if id(v) not in inner_ids}
    return ids


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
    """Every array of a checkpoint file; a damaged file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged ({type(error).__name__}: "
                              f"{error})") from error


def load_latest(run_dir):
    """(path, state) of the newest checkpoint of a run that can be read.

    A damaged newest checkpoint (e.g. truncated by a full disk) is skipped with one
    warning naming it, and the previous one in the index is used. A run with no
    checkpoint, or none intact, is a CheckpointError.
    """
    entries = read_index(run_dir)
    if not entries:
        raise CheckpointError(f"run {str(run_dir)!r} has no checkpoint yet")
    damaged = []
    for entry in reversed(entries):
        path = Path(run_dir) / "checkpoints" / entry["file"]
        try:
            state = load_state(path)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        for reason in damaged:
            log.warning("%s; using the previous one, %s", reason, path)
        return path, state
    raise CheckpointError(f"run {str(run_dir)!r} has no intact checkpoint: "
                          + "; ".join(damaged))


def remove_temporaries(run_dir):
    """Delete the temporary files a kill during a checkpoint write left behind."""
    folder = Path(run_dir) / "checkpoints"
    removed = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def save_checkpoint(run_dir, gan, step, keep=3):
    """Write the checkpoint of ``step`` atomically, update the index, prune old ones."""
    return write_state(run_dir, gan_state(gan, step), step, keep)


def write_state(run_dir, state, step, keep=3):
    """Write a state dict as the checkpoint of ``step`` (atomically) and index it."""
    folder = Path(run_dir) / "checkpoints"
    name = f"step-{step:08d}.npz"
    _atomic_write(folder / name, lambda handle: np.savez(handle, **state))
    entries = [e for e in read_index(run_dir) if e["step"] != step]
    entries.append({"step": step, "file": name})
    stale, entries = entries[:-keep], entries[-keep:]
    payload = json.dumps({"checkpoints": entries}, indent=1).encode()
    _atomic_write(folder / INDEX, lambda handle: handle.write(payload))
    for entry in stale:
        (folder / entry["file"]).unlink(missing_ok=True)
    return folder / name
