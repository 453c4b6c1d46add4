"""The run loop: set up a stage, train it with Keras ``fit``, checkpoint, resume.

A run directory holds ``config.yaml`` (the resolved config), ``stats.jsonl``,
``tensorboard/`` and ``checkpoints/``. ``load(run_dir)`` gives back the trained
generators.
"""

import dataclasses
import logging
import types
from pathlib import Path

import keras
import tensorflow as tf
import yaml

from tfcartoon.config import ConfigError, config_from_dict
from tfcartoon.data.dataset import GroupFiles, discover, training_dataset
from tfcartoon.gan import CartoonGAN
from tfcartoon.paths import shared_path
from tfcartoon.precision import dtype_policy
from tfcartoon.training import callbacks as cb
from tfcartoon.training.checkpoints import (
    CheckpointError, latest_checkpoint, load_state, restore_gan, restore_generator)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


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
    """Return (config, embedder path or None); without a model the loss is switched off."""
    model = config.face_id.model
    path = None
    if model == "shared":
        path = shared_path("models", "face_id", "squeezenet_fp32.tflite")
    elif model:
        path = Path(model)
        if not path.exists():
            raise ConfigError(f"face_id.model {model!r} does not exist")
    if path is None:
        log.warning("face-ID loss is off: no face-recognition model (face_id.model=%r)", model)
        config = dataclasses.replace(
            config, face_id=dataclasses.replace(config.face_id, model=None, weight=0.0))
    return config, path


def _check_run_dir(run_dir, resume):
    run_dir = Path(run_dir)
    has_run = (run_dir / CONFIG_FILE).exists()
    if resume and not has_run:
        raise TrainingError(f"--resume: {str(run_dir)!r} holds no run ({CONFIG_FILE} missing)")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingError(f"run directory {str(run_dir)!r} is not empty: pass --resume to "
                            "continue that run, or choose another --out")
    return run_dir


def read_run_config(run_dir):
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainingError(f"{str(run_dir)!r} is not a run directory ({CONFIG_FILE} missing)")
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def _check_init_compatible(config, base_config, init_dir):
    for key in ("image_size", "ngf", "hourglass_depth"):
        if getattr(config.model, key) != getattr(base_config.model, key):
            raise TrainingError(
                f"--init {str(init_dir)!r} has model.{key}={getattr(base_config.model, key)}, "
                f"this run has {getattr(config.model, key)}")
    if config.base_group != base_config.base_group:
        raise TrainingError(f"--init run's base group is {base_config.base_group!r}, this "
                            f"run's is {config.base_group!r}")


def init_from_base(gan, init_dir):
    """Stage two start: load the base run's trunk and base branch, copy it to each group."""
    base_config = read_run_config(init_dir)
    _check_init_compatible(gan.config, base_config, init_dir)
    checkpoint = latest_checkpoint(init_dir)
    if checkpoint is None:
        raise TrainingError(f"--init {str(init_dir)!r} has no checkpoint yet")
    state = load_state(checkpoint)
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
    lines = [f"stage: {config.train.stage}  update rule: {config.train.update_rule}  "
             f"steps: {config.train.steps}"]
    if config.data.pool_groups:
        lines.append(f"  base branch trained on pooled groups: "
                     f"{', '.join(config.data.pool_groups)}")
    for group, found in files.items():
        lines.append(f"  {group}: {len(found.photos)} photos, {len(found.cartoons)} cartoons")
    return lines


def stage_groups(config):
    return [config.base_group] if config.train.stage == "base" else list(config.groups)


def stage_files(config, data_dir):
    """Photos and cartoons of each group this stage trains, keyed by group.

    With ``data.pool_groups`` (base stage), the listed groups' files are pooled and
    trained as the base group: the paper's Baseline1-3.
    """
    pool = config.data.pool_groups
    if not pool:
        return discover(data_dir, stage_groups(config), config.base_group)
    found = discover(data_dir, pool, config.base_group)
    return {config.base_group: GroupFiles(
        photos=[f for g in pool for f in found[g].photos],
        cartoons=[f for g in pool for f in found[g].cartoons])}


def train(config, data_dir, run_dir, init=None, resume=False, devices=None):
    """Train one stage. Returns the run directory. Raises TrainingError on NaN/Inf."""
    run_dir = _check_run_dir(run_dir, resume)
    if resume:
        config = read_run_config(run_dir)
    if config.train.stage == "fewshot" and init is None and not resume:
        raise TrainingError("the fewshot stage starts from a base run: pass --init BASE_RUN_DIR")
    for key in ("checkpoint_every", "image_every"):
        if getattr(config.train, key) % config.train.log_every:
            raise ConfigError(f"train.{key} ({getattr(config.train, key)}) must be a multiple "
                              f"of train.log_every ({config.train.log_every})")
    if config.train.steps % config.train.log_every:
        raise ConfigError(f"train.steps ({config.train.steps}) must be a multiple of "
                          f"train.log_every ({config.train.log_every})")
    config, embedder_path = resolve_face_id(config)
    files = stage_files(config, data_dir)
    for line in plan_summary(config, files):
        log.info(line)

    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    with dtype_policy(resolve_precision(config.train.precision)):
        return _fit(config, files, run_dir, init, resume, devices, embedder_path)


def _fit(config, files, run_dir, init, resume, devices, embedder_path):
    from tfcartoon.models.face_id import load_face_embedder

    strategy = make_strategy(devices)
    with strategy.scope():
        embedder = load_face_embedder(str(embedder_path)) if embedder_path else None
        gan = CartoonGAN(config, face_embedder=embedder)
        gan.build_optimizers()
        gan.compile(optimizer=gan.generator_optimizer, jit_compile=config.train.jit_compile)
    start_step = 0
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainingError(f"--resume: {str(run_dir)!r} has no checkpoint to resume from")
        start_step = restore_gan(gan, load_state(checkpoint), str(checkpoint))
        log.info("resumed from %s (step %d)", checkpoint, start_step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        if init is not None:
            log.info("initialised from %s", init_from_base(gan, init))
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
    train_cfg = config.train
    if start_step >= train_cfg.steps:
        log.info("run already complete at step %d", start_step)
        return run_dir

    # The global batch repeats one replica's layout, so each replica gets that layout.
    slots = gan.plan.slots * strategy.num_replicas_in_sync
    dataset = training_dataset(files_by_index(config, files), slots, config, start_step)
    sample = next(iter(training_dataset(files_by_index(config, files), slots, config, 0)))
    counter = cb.StepCounter(start_step)
    guard = cb.NonFiniteGuard(counter)
    callbacks = [
        cb.GlobalStep(counter), guard, cb.ProgressBar(counter, train_cfg.steps),
        cb.ImageGrids(counter, run_dir, sample, train_cfg.image_every),
        cb.StatsWriter(counter, run_dir, guard),
        cb.Checkpointer(counter, run_dir, train_cfg.checkpoint_every,
                        train_cfg.keep_checkpoints, guard),
    ]
    gan.fit(dataset, epochs=train_cfg.steps // train_cfg.log_every,
            initial_epoch=start_step // train_cfg.log_every,
            steps_per_epoch=train_cfg.log_every, callbacks=callbacks, verbose=0)
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
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"run {str(run_dir)!r} has no checkpoint yet")
    return config, checkpoint, load_state(checkpoint)


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
