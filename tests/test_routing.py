"""The method's gradient routing, loss weights, CAM targets and stage-two batch layout,
pinned at tiny sizes with eager training steps (no graph building)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from tests.helpers import GROUPS, tiny_config

FEWSHOT = ["train.stage=fewshot", "train.steps=4"]


def _batch(n_groups=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n_groups, size, size, 3)
    return {"photo": rng.uniform(-1, 1, shape).astype(np.float32),
            "cartoon": rng.uniform(-1, 1, shape).astype(np.float32),
            "group": np.arange(n_groups, dtype=np.int32)}


def _gan(*overrides, precision="float32"):
    from tfcartoon.gan import CartoonGAN
    from tfcartoon.precision import dtype_policy

    config = tiny_config(*overrides, "face_id.model=null")
    with dtype_policy(precision):
        gan = CartoonGAN(config)
        gan.build_optimizers()
    return gan


def _snapshot(gan):
    """{part name: list of arrays} for every variable set the rules talk about."""
    parts = {"discriminators": [v for d in gan.discriminators.values() for v in d.weights]}
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        gen = getattr(gan, gen_name)
        parts[f"{gen_name}/trunk"] = gen.shared_variables
        for group in gen.groups:
            parts[f"{gen_name}/{group}"] = gen.group_variables(group)
    return {name: [np.array(v.numpy()) for v in variables] for name, variables in parts.items()}


def _changed(before, after):
    return {name for name in before
            if any(not np.array_equal(b, a) for b, a in zip(before[name], after[name]))}


def _expected(*groups, trunk):
    parts = {"discriminators"}
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        parts |= {f"{gen_name}/{g}" for g in groups}
        if trunk:
            parts.add(f"{gen_name}/trunk")
    return parts


@pytest.mark.parametrize("rule, group, expected", [
    ("strict", "elderly", _expected("elderly", trunk=False)),
    ("strict", None, _expected("young_men", "kids", "elderly", trunk=False)),
    ("reference", "elderly", _expected("young_women", "elderly", trunk=True)),
    ("full", "elderly", _expected(*GROUPS, trunk=True)),
])
def test_each_update_rule_moves_exactly_its_variables(rule, group, expected):
    overrides = [*FEWSHOT, f"train.update_rule={rule}"]
    if group:
        overrides.append(f"train.group={group}")
    gan = _gan(*overrides)
    before = _snapshot(gan)
    gan.train_step(_batch())
    assert _changed(before, _snapshot(gan)) == expected


def _trunk_after_step(rule, batch, weights):
    gan = _gan(*FEWSHOT, f"train.update_rule={rule}", "train.group=elderly", "loss.cam=0",
               "loss.adversarial=0", "loss.group_generator=0")
    gan.set_weights(weights)
    gan.train_step(batch)
    return [v.numpy() for v in gan.photo2cartoon.shared_variables]


@pytest.mark.parametrize("rule, trunk_sees_new_groups", [("reference", False), ("full", True)])
def test_only_base_group_losses_reach_the_trunk_under_reference(rule, trunk_sees_new_groups):
    """With the CAM and discriminator-dependent terms off, a step whose elderly sample
    differs moves the trunk identically under 'reference' (new-group losses reach only the
    branches) and differently under 'full'."""
    weights = _gan(*FEWSHOT, "train.group=elderly").get_weights()
    batch_a, batch_b, other = _batch(), _batch(), _batch(seed=5)
    for key in ("photo", "cartoon"):  # slot 3 (elderly) differs
        batch_b[key][3] = other[key][3]
    trunk_a = _trunk_after_step(rule, batch_a, weights)
    trunk_b = _trunk_after_step(rule, batch_b, weights)
    same = all(np.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(trunk_a, trunk_b))
    assert same != trunk_sees_new_groups


def test_every_loss_weight_scales_its_own_term():
    from tfcartoon import gan as gan_module

    weights = {"adversarial": 2.0, "cycle": 3.0, "identity": 5.0, "cam": 7.0,
               "group_generator": 11.0}
    terms = {name: np.ones(2, np.float32) for name in gan_module.GENERATOR_TERMS}
    gan = _gan(*FEWSHOT, "train.group=elderly", *(f"loss.{k}={v}" for k, v in weights.items()))
    # face_id.model=null and a fewshot stage would refuse these; _weighted reads the config.
    config = gan.config
    gan.config = dataclasses.replace(
        config, face_id=dataclasses.replace(config.face_id, weight=13.0),
        loss=dataclasses.replace(config.loss, paired=17.0, paired_edge=19.0,
                                 paired_texture=23.0))
    weighted = {k: float(np.mean(v)) for k, v in gan._weighted(terms).items()}
    assert weighted == {"adversarial": 2.0, "cycle": 3.0, "identity": 5.0, "cam": 7.0,
                        "face_id": 13.0, "group": 11.0, "paired": 17.0, "paired_edge": 19.0,
                        "paired_texture": 23.0}


def test_cam_targets_are_one_for_the_cross_domain_pass_and_zero_for_identity(monkeypatch):
    from tfcartoon import losses

    calls = []
    real = losses.cam_bce

    def spy(logits, target, per_sample=False):
        calls.append(target)
        return real(logits, target, per_sample)

    monkeypatch.setattr(losses, "cam_bce", spy)
    gan = _gan(*FEWSHOT, "train.group=elderly")
    batch = _batch()
    translated = gan._translate(batch["photo"], batch["cartoon"])
    fake_cartoon, fake_photo, cartoon_as_cartoon, photo_as_photo = translated
    terms = gan._generator_terms(batch["photo"], batch["cartoon"], batch["group"], translated)
    assert calls == [1, 0, 1, 0]
    expected = (real(fake_photo["cam_logit"], 1, True) + real(photo_as_photo["cam_logit"], 0, True)
                + real(fake_cartoon["cam_logit"], 1, True)
                + real(cartoon_as_cartoon["cam_logit"], 0, True))
    np.testing.assert_allclose(np.asarray(terms["cam"]), np.asarray(expected), rtol=1e-6)


def test_all_four_discriminators_contribute():
    gan = _gan(*FEWSHOT, "train.group=elderly")
    batch = _batch()
    fakes = gan._translate(batch["photo"], batch["cartoon"])[:2]
    args = (batch["photo"], batch["cartoon"], fakes[1]["image"], fakes[0]["image"],
            batch["group"])
    total = float(gan._discriminator_losses(*args)[0])
    for name, disc in gan.discriminators.items():
        kernel = disc.trainable_variables[0]
        saved = kernel.numpy()
        kernel.assign(saved * 3.0 + 0.5)
        assert float(gan._discriminator_losses(*args)[0]) != pytest.approx(total), name
        kernel.assign(saved)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_a_training_step_under_mixed_precision(precision):
    from tfcartoon.precision import dtype_policy

    gan = _gan(*FEWSHOT, "train.group=elderly", precision=precision)
    if precision == "mixed_float16":
        import keras

        assert isinstance(gan.generator_optimizer, keras.optimizers.LossScaleOptimizer)
    before = _snapshot(gan)
    # A loss-scaled step whose float16 gradients overflow is skipped (and the scale
    # halved), so allow a few steps for the first real update.
    for seed in range(6):
        with dtype_policy(precision):
            logs = gan.train_step(_batch(seed=seed))
        changed = _changed(before, _snapshot(gan))
        if changed != {"discriminators"}:
            break
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert changed == _expected("elderly", trunk=False)
    assert gan.photo2cartoon.route(_batch()["photo"], [0, 1, 2, 3])["image"].dtype == "float32"


def test_stage_two_batches_hold_one_photo_and_cartoon_per_group(tmp_path):
    from tfcartoon.data.dataset import training_dataset
    from tfcartoon.gan import TrainingPlan
    from tfcartoon.training.run import files_by_index, stage_files

    # Each group's images are one flat colour (group index * 40), with a white left band
    # so a flip is visible.
    for index, group in enumerate(GROUPS):
        for domain in ("photos", "cartoons"):
            folder = tmp_path / group / domain
            folder.mkdir(parents=True)
            for k in range(2):
                image = np.full((80, 80, 3), index * 40 + (domain == "cartoons"), np.uint8)
                image[:, :10] = 255
                Image.fromarray(image).save(folder / f"{k}.png")
    config = tiny_config(*FEWSHOT, "train.group=elderly", "train.steps=8")
    plan = TrainingPlan.from_config(config)
    assert plan.slots == [0, 1, 2, 3]
    files = stage_files(config, tmp_path)
    flips = set()
    for batch in training_dataset(files_by_index(config, files), plan.slots, config):
        assert batch["group"].numpy().tolist() == [0, 1, 2, 3]
        for key in ("photo", "cartoon"):
            images = batch[key].numpy()
            assert images.shape == (4, 64, 64, 3)  # resized to 72, cropped to 64
            assert images.min() >= -1.0 and images.max() <= 1.0
            centre = (images[:, 32, 32, 0] + 1) * 127.5
            offset = 1 if key == "cartoon" else 0
            np.testing.assert_allclose(centre, np.arange(4) * 40 + offset, atol=1.0)
            for image in images:
                flips.add(bool(image[32, -1, 0] > image[32, 0, 0]))
    assert flips == {True, False}  # both orientations occur


@pytest.mark.parametrize("rule, batch, expected", [
    # per-sample losses 1..8: 4 groups x batch 2 (sorted by group)
    ("strict", 2, 36.0 / 2),   # sum of the group means: 1.5 + 3.5 + 5.5 + 7.5
    ("reference", 2, 36.0 / 8),
    ("full", 2, 36.0 / 8),
    ("strict", 1, 10.0),       # batch 1: 1 + 2 + 3 + 4 (only the first four samples)
])
def test_strict_rule_gives_each_branch_its_own_groups_mean(rule, batch, expected):
    from tfcartoon.gan import TrainingPlan

    config = tiny_config(*FEWSHOT, f"train.update_rule={rule}", f"train.batch_size={batch}",
                         "train.group=elderly" if rule == "strict" else "train.steps=4",
                         "face_id.model=null")
    plan = TrainingPlan.from_config(config)
    per_sample = np.arange(1, 1 + len(plan.slots), dtype=np.float32)
    assert plan.slots == sorted(plan.slots) and len(plan.slots) == 4 * batch
    assert float(plan.generator_objective(per_sample)) == pytest.approx(expected)


TWO_GROUPS = "groups=[young_women, elderly]"  # half the work of four; same code paths


def _three_steps(rule, micro, weights):
    gan = _gan(*FEWSHOT, TWO_GROUPS, f"train.update_rule={rule}", "train.group=elderly",
               f"train.group_micro_batches={micro}", precision="float64")
    gan.set_weights(weights)
    for optimizer in (gan.generator_optimizer, gan.discriminator_optimizer):
        # Adam divides by sqrt(v) + eps: a parameter whose gradient is tiny (a bias
        # whose effect a later normalisation almost cancels) turns rounding-level
        # differences into visibly different steps (with eps 1e-6 the full rule's
        # to_rgb bias ended 1.9e-5 apart). eps 1e-4 keeps such steps proportional to
        # their gradient; gradients of 1e-3 and up still take nearly full steps.
        optimizer.epsilon = 1e-4
    logs = [gan.train_step(_batch(n_groups=2, seed=seed)) for seed in range(3)]
    branch = [np.array(v) for v in gan.photo2cartoon.group_variables("elderly")]
    return gan.get_weights(), [{k: float(v) for k, v in step.items()} for step in logs], branch


@pytest.mark.parametrize("rule", ["strict", "full", "reference"])
def test_micro_batched_step_is_the_step_of_one_pass(rule):
    """Stage two in per-group micro-batches (under strict the young_women samples run
    forward only; under reference two objectives per micro-batch) against one pass over
    the whole batch: the same losses and, after 3 steps, the same weights within 1e-5.
    In float64 (norm statistics, losses and discriminators included): float32 rounding
    differs between batch layouts and the tiny random model amplifies it to 1e-2 in some
    gradients."""
    start = _gan(*FEWSHOT, TWO_GROUPS, "train.group=elderly", precision="float64")
    initial = start.get_weights()
    branch0 = [np.array(v) for v in start.photo2cartoon.group_variables("elderly")]
    weights, logs, branch = _three_steps(rule, "false", initial)
    micro_weights, micro_logs, _ = _three_steps(rule, "true", initial)
    for step, micro_step in zip(logs, micro_logs):
        assert micro_step == pytest.approx(step, rel=1e-6)
    moved = max(float(np.max(np.abs(w - w0))) for w, w0 in zip(branch, branch0))
    assert moved > 1e-4  # the elderly branch did train
    for micro, single in zip(micro_weights, weights):
        np.testing.assert_allclose(micro, single, rtol=0, atol=1e-5)
