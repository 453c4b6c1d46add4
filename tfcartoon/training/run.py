"""The run loop: set up a stage, train it with Keras ``fit``, checkpoint, resume.

A run directory holds ``config.yaml`` (the resolved config), ``stats.jsonl``,
``tensorboard/`` and ``checkpoints/``. ``load(run_dir)`` gives back the trained
generators.
"""

import dataclasses
import json
import logging
import types
from pathlib import Path

import keras
import tensorflow as tf
import yaml

from tfcartoon.config import ConfigError, config_from_dict
from tfcartoon.data.dataset import (
    DatasetError, GroupFiles, discover, pair_files, split_holdout, training_dataset)
from tfcartoon.gan import CartoonGAN
from tfcartoon.paths import shared_path
from tfcartoon.precision import dtype_policy
from tfcartoon.training import callbacks as cb
from tfcartoon.training.checkpoints import (
    latest_checkpoint, load_latest, remove_temporaries, restore_gan,
    restore_generator)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"


class TrainingError(RuntimeError):
    """The run cannot start or stopped on a non-finite loss."""


def resolve_precision(precision):
    """'auto' means mixed_float16 on a GPU and float32 on a CPU."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


def make_strategy(devices=None):
    """MirroredStrategy over ``devices`` or over several GPUs; else the default strategy."""
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def resolve_face_id(config):
    """Return (config, embedder path or None).

    ``face_id.model: shared`` is the shared model (``../shared`` or ``$TFCARTOON_SHARED``),
    any other string a file; either must exist, or the run is refused: the face-ID term
    is part of the method and is never dropped behind the user's back. Only an explicit
    ``face_id.model: null`` switches it off (weight 0), with one warning.
    """
    model = config.face_id.model
    if model is None:
        log.warning("face-ID loss is off (face_id.model: null)")
        return dataclasses.replace(
            config, face_id=dataclasses.replace(config.face_id, weight=0.0)), None
    if model == "shared":
        path = shared_path("models", "face_id", "squeezenet_fp32.tflite")
        if path is None:
            raise ConfigError(
                "face_id.model is 'shared' but the shared face-ID model "
                "(models/face_id/squeezenet_fp32.tflite in ../shared or $TFCARTOON_SHARED) is "
                "absent: point face_id.model at a face-embedding .tflite/.keras file, or set "
                "it to null to train without the face-ID loss")
        return config, path
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"face_id.model {model!r} does not exist (expected a face-embedding "
                          ".tflite or .keras file, 'shared', or null)")
    return config, path


def _check_run_dir(run_dir, resume):
    run_dir = Path(run_dir)
    has_run = (run_dir / CONFIG_FILE).exists()
    if resume and not has_run:
        raise TrainingError(f"--resume: {str(run_dir)!r} holds no run ({CONFIG_FILE} missing)")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        if has_run:
            raise TrainingError(f"run directory {str(run_dir)!r} holds a run: pass --resume "
                                "to continue it, or choose another --out")
        raise TrainingError(f"--out {str(run_dir)!r} is not empty and is not a run: nothing "
                            "in it is touched; choose an empty or new folder")
    return run_dir


def read_run_config(run_dir):
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainingError(f"{str(run_dir)!r} is not a run directory ({CONFIG_FILE} missing)")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def _check_init_compatible(config, base_config, init_dir):
    # image_size is free: no weight depends on it (the generators are convolutional and
    # pool globally), so a recipe can warm up small and finish at full size.
    for key in ("ngf", "hourglass_depth"):
        if getattr(config.model, key) != getattr(base_config.model, key):
            raise TrainingError(
                f"--init {str(init_dir)!r} has model.{key}={getattr(base_config.model, key)}, "
                f"this run has {getattr(config.model, key)}")
    if config.base_group != base_config.base_group:
        raise TrainingError(f"--init run's base group is {base_config.base_group!r}, this "
                            f"run's is {config.base_group!r}")


def init_from_base(gan, init_dir):
    """Stage start: load the base run's (or ``preset:NAME``'s) trunk and base branch, copy
    it to each group. Returns the checkpoint (or preset weights file) it loaded."""
    from tfcartoon.preset import init_from_preset, parse_preset_ref

    preset = parse_preset_ref(init_dir)
    if preset is not None:
        return init_from_preset(gan, preset)
    base_config = read_run_config(init_dir)
    _check_init_compatible(gan.config, base_config, init_dir)
    if latest_checkpoint(init_dir) is None:
        raise TrainingError(f"--init {str(init_dir)!r} has no checkpoint yet")
    checkpoint, state = load_latest(init_dir)
    base = gan.config.base_group
    parts = {"shared_encoder", "shared_decoder", f"head_{base}", f"cam_{base}", f"tail_{base}"}
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        generator = getattr(gan, gen_name)
        restore_generator(generator, state, gen_name, str(checkpoint), parts)
        for group in generator.groups[1:]:
            generator.copy_group(base, group)
    return checkpoint


def plan_summary(config, files):
    """Lines printed by --dry-run and at the start of a run."""
    rule = f"  update rule: {config.update_rule}" if config.train.stage == "fewshot" else ""
    lines = [f"stage: {config.train.stage}{rule}  steps: {config.train.steps}"]
    if config.data.pool_groups:
        lines.append(f"  base branch trained on pooled groups: "
                     f"{', '.join(config.data.pool_groups)}")
    for group, found in files.items():
        lines.append(f"  {group}: {len(found.photos)} photos, {len(found.cartoons)} cartoons")
    return lines


def stage_groups(config):
    return [config.base_group] if config.train.stage == "base" else list(config.groups)


def trained_groups(config):
    """The groups whose branch this run trained (or inherited trained from its --init).

    A base-stage run trains only the base branch; a few-shot run with ``train.group``
    trains that branch and keeps the base branch it started from; the others are
    untouched copies of the base branch.
    """
    if config.train.stage == "base":
        return [config.base_group]
    if config.train.group is None:
        return list(config.groups)
    return [config.base_group, config.train.group]


def stage_files(config, data_dir):
    """Photos and cartoons of each group this stage trains, keyed by group.

    With ``data.pool_groups`` (base stage), the listed groups' files are pooled and
    trained as the base group: the paper's Baseline1-3.
    """
    data, base = config.data, config.base_group
    pool = data.pool_groups
    if not pool:
        files = discover(data_dir, stage_groups(config), base)
    else:
        found = discover(data_dir, pool, base)
        files = {base: GroupFiles(photos=[f for g in pool for f in found[g].photos],
                                  cartoons=[f for g in pool for f in found[g].cartoons])}
    if data.paired:
        files[base] = pair_files(files[base], base)
    if data.holdout:
        files[base], held_out = split_holdout(files[base], data.holdout)
        log.info("%s: %d photos and %d cartoons held out of training (data.holdout=%g)",
                 base, len(held_out.photos), len(held_out.cartoons), data.holdout)
        if not files[base].photos or not files[base].cartoons:
            raise DatasetError(f"data.holdout={data.holdout} leaves no {base!r} files to train on")
    return files


def _provenance(data_dir, init, loaded_from):
    """Where a run came from: its data folder and what ``--init`` loaded (with a hash)."""
    from tfcartoon.preset import file_sha256, parse_preset_ref

    record = {"data": str(Path(data_dir).resolve()), "init": None}
    if init is not None:
        preset = parse_preset_ref(init)
        record["init"] = {
            "preset" if preset else "run": preset or str(Path(init).resolve()),
            "checkpoint": str(Path(loaded_from).resolve()),
            "sha256": file_sha256(loaded_from)}
    return record


def check_resume_data(run_dir, data_dir, allow_other_data):
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    for key, tool, what in (("merged_from", "merge", "a merged"),
                            ("averaged_from", "average", "an averaged")):
        if record.get(key):
            raise TrainingError(f"--resume: {str(run_dir)!r} is {what} model (python -m "
                                f"tfcartoon.{tool}) and holds no training state; resume the "
                                f"runs it was {tool}d from, then {tool} them again, or start "
                                "a new run from it with --init")
    recorded = record["data"]
    if recorded != str(Path(data_dir).resolve()) and not allow_other_data:
        raise TrainingError(f"--resume: this run trained on {recorded!r}, not on "
                            f"{str(Path(data_dir).resolve())!r}; pass --allow-other-data to "
                            "continue it on other data")


def train(config, data_dir, run_dir, init=None, resume=False, devices=None,
          allow_other_data=False):
    """Train one stage. Returns the run directory. Raises TrainingError on NaN/Inf.

    A new run records the resolved config (``precision: auto`` replaced by what was
    used) and ``provenance.json`` (data folder, what ``init`` loaded and its hash). A
    resume refuses another data folder unless ``allow_other_data``.
    """
    run_dir = _check_run_dir(run_dir, resume)
    if resume:
        config = read_run_config(run_dir)
        check_resume_data(run_dir, data_dir, allow_other_data)
    else:
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, precision=resolve_precision(config.train.precision)))
    if config.train.stage == "fewshot" and init is None and not resume:
        raise TrainingError("the fewshot stage starts from a base run: pass --init BASE_RUN_DIR")
    config, embedder_path = resolve_face_id(config)
    files = stage_files(config, data_dir)
    for line in plan_summary(config, files):
        log.info(line)

    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    with dtype_policy(resolve_precision(config.train.precision)):
        return _fit(config, files, run_dir, init, resume, devices, embedder_path, data_dir)


def _fit(config, files, run_dir, init, resume, devices, embedder_path, data_dir):
    from tfcartoon.models.face_id import load_face_embedder

    strategy = make_strategy(devices)
    with strategy.scope():
        embedder = load_face_embedder(str(embedder_path)) if embedder_path else None
        gan = CartoonGAN(config, face_embedder=embedder)
        gan.build_optimizers()
        gan.compile(optimizer=gan.generator_optimizer, jit_compile=config.train.jit_compile)
    start_step = 0
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise TrainingError(f"--resume: {str(run_dir)!r} has no checkpoint to resume from")
        for path in remove_temporaries(run_dir):
            log.info("removed %s, left by an interrupted checkpoint write", path.name)
        checkpoint, state = load_latest(run_dir)
        start_step = restore_gan(gan, state, str(checkpoint))
        log.info("resumed from %s (step %d)", checkpoint, start_step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        loaded_from = None
        if init is not None:
            loaded_from = init_from_base(gan, init)
            log.info("initialised from %s", loaded_from)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        record = _provenance(data_dir, init, loaded_from)
        (run_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=1) + "\n",
                                               encoding="utf-8")
    train_cfg = config.train
    if start_step >= train_cfg.steps:
        log.info("run already complete at step %d", start_step)
        return run_dir

    # The global batch repeats one replica's layout, so each replica gets that layout.
    slots = gan.plan.slots * strategy.num_replicas_in_sync
    by_index = files_by_index(config, files)
    sample = next(iter(training_dataset(by_index, slots, config, 0, 1)))
    counter = cb.StepCounter(start_step)
    guard = cb.NonFiniteGuard(counter)
    callbacks = [
        cb.GlobalStep(counter), guard, cb.ProgressBar(counter, train_cfg.steps),
        cb.ImageGrids(counter, run_dir, sample, train_cfg.image_every),
        cb.StatsWriter(counter, run_dir, guard),
        cb.Checkpointer(counter, run_dir, train_cfg.checkpoint_every,
                        train_cfg.keep_checkpoints, guard),
    ]
    # Phases: the supervised warm-up (train.supervised_steps), then the full method.
    phases = [(True, start_step, train_cfg.supervised_steps),
              (False, max(start_step, train_cfg.supervised_steps), train_cfg.steps)]
    for supervised, first, end in phases:
        if first >= end or guard.bad_step is not None:
            continue
        log.info("steps %d-%d: %s", first, end, "supervised warm-up (paired terms only)"
                 if supervised else "adversarial training")
        gan.supervised = supervised
        gan.make_train_function(force=True)
        gan.fit(training_dataset(by_index, slots, config, first, end),
                epochs=end // train_cfg.log_every, initial_epoch=first // train_cfg.log_every,
                steps_per_epoch=train_cfg.log_every, callbacks=callbacks, verbose=0,
                shuffle=False)  # the dataset orders the steps itself (seeded, resumable)
    if guard.bad_step is not None:
        last = latest_checkpoint(run_dir)
        raise TrainingError(
            f"non-finite loss ({', '.join(guard.bad_terms)}) at step {guard.bad_step}; "
            f"stopped. Last good checkpoint: {last if last else 'none'}")
    return run_dir


def files_by_index(config, files):
    """``discover`` output keyed for the pipeline (groups absent in this stage omitted)."""
    return {g: files[g] for g in config.groups if g in files}


def latest_state(run_dir):
    """(config, checkpoint path, state) of a run's latest checkpoint."""
    config = read_run_config(run_dir)
    checkpoint, state = load_latest(run_dir)
    return config, checkpoint, state


def load(run_dir):
    """Trained generators of a run: ``.photo2cartoon``, ``.cartoon2photo``, ``.config``.

    The generators are built in float32 (whatever precision the run trained in) and
    loaded from the run's latest checkpoint.
    """
    from tfcartoon.models.generator import build_generator

    config, checkpoint, state = latest_state(run_dir)
    models = {}
    with dtype_policy("float32"):
        for gen_name in ("photo2cartoon", "cartoon2photo"):
            generator = build_generator(config.groups, config.model.ngf,
                                        config.model.image_size,
                                        config.model.hourglass_depth, name=gen_name)
            restore_generator(generator, state, gen_name, str(checkpoint))
            models[gen_name] = generator
    return types.SimpleNamespace(config=config, checkpoint=checkpoint, step=int(state["step"]),
                                 **models)
