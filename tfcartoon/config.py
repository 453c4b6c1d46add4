"""Typed run configuration: YAML files plus command-line overrides.

Unknown keys are errors (with the closest valid key suggested), values are checked
against their field types, and the resolved config is written into every run
directory so a run can be reproduced or resumed from it.
"""

import dataclasses
import difflib
from pathlib import Path
from typing import Optional

import yaml

DEFAULT_GROUPS = ["young_women", "young_men", "kids", "elderly"]
STAGES = ("base", "fewshot")
UPDATE_RULES = ("strict", "reference", "full")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and why."""


@dataclasses.dataclass
class ModelConfig:
    image_size: int = 256
    ngf: int = 32
    hourglass_depth: int = 4
    ndf: int = 32
    global_layers: int = 7
    local_layers: int = 5


@dataclasses.dataclass
class LossConfig:
    adversarial: float = 1.0
    cycle: float = 50.0
    identity: float = 10.0
    cam: float = 1000.0
    group_discriminator: float = 1.0
    group_generator: float = 0.25
    # Paired supervision (base stage, data.paired): L1 between each translation and the
    # image paired with its input (photo -> its cartoon, cartoon -> its photo), and L1
    # between their image gradients (keeps lines crisp), and L1 between their amounts of
    # detail per 8x8 tile (crisp lines even where their exact place is uncertain).
    # 0 switches a term off.
    paired: float = 0.0
    paired_edge: float = 0.0
    paired_texture: float = 0.0


@dataclasses.dataclass
class FaceIdConfig:
    model: Optional[str] = None
    weight: float = 1.0


@dataclasses.dataclass
class DataConfig:
    resize: int = 286
    flip: bool = True
    # Base stage only: train the base branch on the pooled photos and cartoons of these
    # groups instead of the base group's own (the paper's Baseline1-3). Empty: off.
    pool_groups: list = dataclasses.field(default_factory=list)
    # Photos and cartoons that share a file name are pairs (e.g. ../shared/data/p2c/train):
    # a step draws a pair and augments both the same way. Base stage only.
    paired: bool = False
    # Fraction of the base group's files kept out of training, picked by a hash of the
    # file name (stable whatever else the folder holds); ``holdout_files`` lists them.
    holdout: float = 0.0


@dataclasses.dataclass
class TrainConfig:
    stage: str = "base"
    group: Optional[str] = None
    # Stage two only: strict | reference | full. Unset (null) means strict there.
    update_rule: Optional[str] = None
    steps: int = 100_000
    batch_size: int = 1
    lr: float = 1e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    weight_decay: float = 1e-4
    decay_start: float = 0.5
    # The first N steps train the generators on the paired terms (and face-ID) only:
    # no discriminators, no cycle/identity/CAM terms. Needs data.paired.
    supervised_steps: int = 0
    # Stage two: each group's samples are a micro-batch of their own, and only those
    # that reach a trained variable are differentiated (the others run their two
    # cross-domain passes for the discriminators); gradients are added up, so the
    # step is the same as one pass over the batch, with the memory of what trains.
    # false: one pass over the whole batch (more memory; may be faster on a large GPU).
    # (The supervised warm-up, train.supervised_steps, is always one pass.)
    group_micro_batches: bool = True
    precision: str = "auto"
    initial_loss_scale: float = 128.0
    jit_compile: bool = False
    seed: int = 0
    deterministic: bool = False
    log_every: int = 100
    image_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3


@dataclasses.dataclass
class RoutingConfig:
    # The group classifier behind ``--group auto`` (python -m tfcartoon.classifier): it
    # reads each aligned face and picks its branch. A face whose top probability is below
    # ``threshold`` falls back to the base group.
    threshold: float = 0.5
    # Faces are average-pooled to this side before the classifier's four stride-2 convs
    # (model.image_size must be a multiple of it to route); the first conv has ``width``
    # channels.
    input_size: int = 64
    width: int = 16
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2.0e-3
    # Evaluation photos: each group's val/photos folder when it has one; otherwise this
    # fraction of its photos, picked by a hash of the file name, is kept out of training.
    holdout: float = 0.15
    seed: int = 0


@dataclasses.dataclass
class Config:
    groups: list = dataclasses.field(default_factory=lambda: list(DEFAULT_GROUPS))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    face_id: FaceIdConfig = dataclasses.field(default_factory=FaceIdConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    routing: RoutingConfig = dataclasses.field(default_factory=RoutingConfig)

    @property
    def base_group(self):
        return self.groups[0]

    @property
    def update_rule(self):
        """The stage-two update rule in force ('strict' unless the config names one)."""
        return self.train.update_rule or "strict"

    @property
    def fewshot_groups(self):
        """Groups trained in stage two: the named one, or every group but the base."""
        if self.train.group is not None:
            return [self.train.group]
        return list(self.groups[1:])

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_type(path, value, default, annotation):
    """Coerce ``value`` to the field's type or raise ConfigError naming the key."""
    expected = type(default) if default is not None else None
    if annotation == Optional[str] or expected is None:
        if value is None or isinstance(value, str):
            return value
        raise ConfigError(f"{path} must be a string or null, got {value!r}")
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected is list:
        if isinstance(value, list):
            return list(value)
    raise ConfigError(f"{path} must be of type {expected.__name__}, got {value!r}")


def _unknown_key(path, key, valid):
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f"{path}." if path else ""
    raise ConfigError(f"unknown config key {where}{key!r}{hint} (valid: {', '.join(valid)})")


def _merge(instance, values, path=""):
    """Return a copy of dataclass ``instance`` updated from the dict ``values``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(instance)}
    updates = {}
    for key, value in values.items():
        if key not in fields:
            _unknown_key(path, key, list(fields))
        current = getattr(instance, key)
        full = f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(current):
            updates[key] = _merge(current, value, full)
        else:
            updates[key] = _check_type(full, value, fields[key].default
                                       if fields[key].default is not dataclasses.MISSING
                                       else current, fields[key].type)
    return dataclasses.replace(instance, **updates)


def parse_override(text):
    """Turn 'train.steps=200' into {'train': {'steps': 200}} (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    nested = value
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"override {text!r} has an empty key part")
        nested = {part: nested}
    return nested


def _deep_update(target, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
    return target


def validate(config):
    """Cross-field checks; returns ``config`` or raises ConfigError."""
    from tfcartoon.models.generator import validate_groups, validate_image_size

    try:
        validate_groups(config.groups)
        validate_image_size(config.model.image_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    train = config.train
    choices = {"train.stage": (train.stage, STAGES),
               "train.update_rule": (config.update_rule, UPDATE_RULES),
               "train.precision": (train.precision, PRECISIONS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    if train.group is not None:
        if train.group not in config.groups:
            raise ConfigError(f"train.group {train.group!r} is not one of groups {config.groups}")
        if train.group == config.base_group:
            raise ConfigError(f"train.group {train.group!r} is the base group; the few-shot "
                              f"stage trains the other groups {config.groups[1:]}")
    if train.stage == "base":
        for key, value in (("train.group", train.group),
                           ("train.update_rule", train.update_rule)):
            if value is not None:
                raise ConfigError(f"{key}={value!r} applies to the fewshot stage only; the base "
                                  f"stage trains the base group {config.base_group!r} and every "
                                  "variable (leave it unset, or use --stage fewshot)")
    pool = config.data.pool_groups
    if pool:
        if train.stage != "base":
            raise ConfigError("data.pool_groups applies to the base stage only (it trains the "
                              f"base branch on pooled groups); this run's stage is {train.stage!r}")
        unknown = [g for g in pool if g not in config.groups]
        if unknown:
            raise ConfigError(f"data.pool_groups {unknown} not in groups {config.groups}")
        if len(set(pool)) != len(pool):
            raise ConfigError(f"data.pool_groups lists a group twice: {pool}")
    if train.stage == "fewshot" and len(config.groups) < 2:
        raise ConfigError("the fewshot stage needs at least two groups (base + one new group)")
    positive = {"train.steps": train.steps, "train.batch_size": train.batch_size,
                "train.log_every": train.log_every, "train.image_every": train.image_every,
                "train.checkpoint_every": train.checkpoint_every,
                "train.keep_checkpoints": train.keep_checkpoints, "model.ngf": config.model.ngf,
                "model.ndf": config.model.ndf}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    _validate_numbers(config)
    if not 0.0 <= train.decay_start <= 1.0:
        raise ConfigError(f"train.decay_start must be in [0, 1], got {train.decay_start}")
    _validate_paired(config)
    _validate_routing(config)
    if config.data.resize < config.model.image_size:
        raise ConfigError(f"data.resize ({config.data.resize}) must be at least "
                          f"model.image_size ({config.model.image_size})")
    return config


def _validate_routing(config):
    """The group classifier's settings (``routing``) must fit the model's image size."""
    routing = config.routing
    if not 0.0 <= routing.threshold <= 1.0:
        raise ConfigError(f"routing.threshold must be in [0, 1], got {routing.threshold}")
    # whether it divides model.image_size is checked when a classifier is trained or
    # loaded: a run that never routes does not depend on it
    if routing.input_size < 16 or routing.input_size % 16:
        raise ConfigError(f"routing.input_size must be a multiple of 16, got "
                          f"{routing.input_size}")
    for key in ("width", "epochs", "batch_size"):
        if getattr(routing, key) < 1:
            raise ConfigError(f"routing.{key} must be at least 1, got {getattr(routing, key)}")
    if not routing.lr > 0:
        raise ConfigError(f"routing.lr must be a positive number, got {routing.lr}")
    if not 0.0 <= routing.holdout < 1.0:
        raise ConfigError(f"routing.holdout must be in [0, 1), got {routing.holdout}")


def _validate_numbers(config):
    """Learning rates, weights, depths and step counts that cannot work are refused."""
    import math

    train, model = config.train, config.model
    for key in ("lr", "initial_loss_scale"):
        value = getattr(train, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"train.{key} must be a positive number, got {value}")
    for key in ("beta_1", "beta_2"):
        value = getattr(train, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"train.{key} must be in [0, 1), got {value}")
    if not (math.isfinite(train.weight_decay) and train.weight_decay >= 0):
        raise ConfigError(f"train.weight_decay must be at least 0, got {train.weight_decay}")
    weights = {f"loss.{f.name}": getattr(config.loss, f.name)
               for f in dataclasses.fields(config.loss)}
    weights["face_id.weight"] = config.face_id.weight
    for key, value in weights.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
    if model.hourglass_depth not in (1, 2, 3, 4):
        raise ConfigError(f"model.hourglass_depth must be 1, 2, 3 or 4, got "
                          f"{model.hourglass_depth}")
    from tfcartoon.models.discriminator import min_image_size

    for kind in ("global", "local"):
        layers = getattr(model, f"{kind}_layers")
        if layers < 3:
            raise ConfigError(f"model.{kind}_layers must be at least 3, got {layers}")
        if model.image_size < min_image_size(layers):
            deepest = max(n for n in range(3, layers) if min_image_size(n) <= model.image_size)
            raise ConfigError(
                f"model.{kind}_layers={layers} needs images of at least "
                f"{min_image_size(layers)} px; model.image_size is {model.image_size} (use "
                f"{deepest} layers or fewer)")
    for key in ("steps", "supervised_steps", "checkpoint_every", "image_every"):
        value = getattr(train, key)
        if value % train.log_every:
            raise ConfigError(f"train.{key} ({value}) must be a multiple of train.log_every "
                              f"({train.log_every})")


def _validate_paired(config):
    train, loss, data = config.train, config.loss, config.data
    if not 0.0 <= data.holdout < 1.0:
        raise ConfigError(f"data.holdout must be in [0, 1), got {data.holdout}")
    if not 0 <= train.supervised_steps <= train.steps:
        raise ConfigError(f"train.supervised_steps must be in [0, train.steps={train.steps}], "
                          f"got {train.supervised_steps}")
    wants_pairs = {"loss.paired": loss.paired > 0, "loss.paired_edge": loss.paired_edge > 0,
                   "loss.paired_texture": loss.paired_texture > 0,
                   "train.supervised_steps": train.supervised_steps > 0}
    asked = [key for key, on in wants_pairs.items() if on]
    if asked and not data.paired:
        raise ConfigError(f"{', '.join(asked)} need paired data: set data.paired=true (photos "
                          "and cartoons with the same file names)")
    if data.paired and train.stage != "base":
        raise ConfigError("data.paired applies to the base stage only; this run's stage is "
                          f"{train.stage!r}")
    if data.paired and data.pool_groups:
        raise ConfigError("data.paired and data.pool_groups cannot be combined")
    if train.supervised_steps and not (loss.paired or loss.paired_edge or loss.paired_texture):
        raise ConfigError("train.supervised_steps trains on the paired terms only, but "
                          "loss.paired, loss.paired_edge and loss.paired_texture are all 0")


def load_config(path=None, overrides=(), base=None):
    """Load a YAML config (or defaults), apply ``overrides`` ('a.b=value'), validate."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {loaded!r}")
        values = loaded or {}
    for text in overrides:
        _deep_update(values, parse_override(text))
    return validate(_merge(base or Config(), values))


def config_from_dict(values):
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run's config.yaml).

    Runs written before ``train.update_rule`` became a stage-two-only setting stored
    'strict' for base runs too; that value meant nothing there and is dropped.
    """
    train = values.get("train") if isinstance(values, dict) else None
    if isinstance(train, dict) and train.get("stage", "base") == "base" and \
            train.get("update_rule") == "strict":
        values = {**values, "train": {k: v for k, v in train.items() if k != "update_rule"}}
    return validate(_merge(Config(), values))
