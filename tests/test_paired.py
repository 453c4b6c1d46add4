"""Paired training: pairs in the pipeline, held-out split, paired losses, supervised warm-up."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import BASE, tiny_config

PAIRED = ["data.paired=true", "loss.paired=10", "loss.paired_edge=5"]


def make_paired(root, count=6, size=80, partner=lambda a: a):
    """DIR/photos and DIR/cartoons with the same names; cartoon = partner(photo)."""
    rng = np.random.default_rng(1)
    for domain in ("photos", "cartoons"):
        (root / domain).mkdir(parents=True)
    for index in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        photo = np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))
        Image.fromarray(photo).save(root / "photos" / f"{index:03d}.png")
        Image.fromarray(partner(photo)).save(root / "cartoons" / f"{index:03d}.png")
    return root


def test_paired_batches_hold_each_photo_with_its_own_cartoon_augmented_alike(tmp_path):
    from tfcartoon.data.dataset import training_dataset
    from tfcartoon.training.run import files_by_index, stage_files

    data = make_paired(tmp_path / "pairs")  # cartoon = the photo itself
    config = tiny_config(*BASE, *PAIRED, "train.batch_size=3", "train.steps=6")
    files = stage_files(config, data)
    batches = list(training_dataset(files_by_index(config, files), [0, 0, 0], config))
    assert len(batches) == 6
    for batch in batches:
        np.testing.assert_array_equal(batch["photo"].numpy(), batch["cartoon"].numpy())
        assert -1.0 <= batch["photo"].numpy().min() and batch["photo"].numpy().max() <= 1.0
    # The same data unpaired draws photos and cartoons independently.
    unpaired = tiny_config(*BASE, "train.batch_size=3", "train.steps=6")
    batches = list(training_dataset(files_by_index(unpaired, files), [0, 0, 0], unpaired))
    assert any(not np.array_equal(b["photo"].numpy(), b["cartoon"].numpy()) for b in batches)


def test_paired_data_without_partners_names_the_unmatched_files(tmp_path):
    from tfcartoon.data.dataset import DatasetError
    from tfcartoon.training.run import stage_files

    data = make_paired(tmp_path / "pairs", count=3)
    (data / "cartoons" / "001.png").rename(data / "cartoons" / "stray.png")
    with pytest.raises(DatasetError, match=r"2 files have no partner: 001\.png, stray\.png"):
        stage_files(tiny_config(*BASE, *PAIRED), data)


def test_holdout_is_a_stable_split_by_file_name_kept_out_of_training(tmp_path):
    from tfcartoon.data.dataset import GroupFiles, is_held_out, split_holdout
    from tfcartoon.training.run import stage_files

    names = [f"/x/{i:05d}.jpg" for i in range(2000)]
    train, held = split_holdout(GroupFiles(names, [n.replace("x", "y") for n in names]), 0.1)
    assert 150 < len(held.photos) < 250  # about 10%
    assert [p.replace("x", "y") for p in held.photos] == held.cartoons  # pairs stay together
    assert not set(train.photos) & set(held.photos)
    assert len(train.photos) + len(held.photos) == len(names)
    # Membership depends on the name only, not on what else is in the folder.
    assert [is_held_out(n, 0.1) for n in names[:50]] == [
        is_held_out(n, 0.1) for n in sorted(names[:50], reverse=True)][::-1]
    data = make_paired(tmp_path / "pairs", count=40)
    files = stage_files(tiny_config(*BASE, *PAIRED, "data.holdout=0.3"), data)["young_women"]
    assert 0 < len(files.photos) < 40
    assert not any(is_held_out(p, 0.3) for p in files.photos + files.cartoons)


@pytest.mark.parametrize("overrides, message", [
    (["loss.paired=1"], "need paired data"),
    (["train.supervised_steps=2", "loss.paired=1"], "need paired data"),
    (["data.paired=true", "train.supervised_steps=8", "train.steps=4"],
     "train.supervised_steps must be in"),
    (["data.paired=true", "train.supervised_steps=2", "train.steps=4"],
     "loss.paired, loss.paired_edge and loss.paired_texture are all 0"),
    (["loss.paired_texture=1"], "loss.paired_texture need paired data"),
    (["loss.paired_edge=-1"], "loss.paired_edge must be a finite number >= 0"),
    (["data.holdout=1.0"], "data.holdout must be in"),
    (["data.paired=true", "train.stage=fewshot", "train.group=elderly"],
     "base stage only"),
])
def test_paired_settings_that_cannot_apply_are_refused(overrides, message):
    from tfcartoon.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_config(*BASE, *overrides)


def test_gradient_l1_pins_hand_computed_values():
    from tfcartoon import losses

    a = np.zeros((1, 2, 2, 1), np.float32)
    a[0, :, 1, 0] = 1.0  # a vertical edge: horizontal differences 1, vertical 0
    b = np.zeros_like(a)
    assert float(losses.gradient_l1(a, b)) == pytest.approx(0.5)
    assert float(losses.gradient_l1(a, a + 0.3)) == pytest.approx(0.0, abs=1e-7)  # shift-free
    per_sample = losses.gradient_l1(np.concatenate([a, b]), np.concatenate([b, b]), True)
    np.testing.assert_allclose(np.asarray(per_sample), [0.5, 0.0])


def test_gradient_energy_l1_asks_for_as_much_detail_not_the_same_place():
    from tfcartoon import losses

    stripes = np.zeros((1, 16, 16, 1), np.float32)
    stripes[0, :, 2, 0] = 1.0  # one vertical line
    moved = np.roll(stripes, 3, axis=2)  # the same line three pixels over (same 8x8 tile)
    flat = np.full_like(stripes, 1.0 / 16)  # the blur of it: same mean, no detail
    # gradient_l1 prefers the blur to the displaced line; the detail term the reverse.
    assert float(losses.gradient_l1(flat, stripes)) < float(losses.gradient_l1(moved, stripes))
    assert float(losses.gradient_energy_l1(moved, stripes)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.gradient_energy_l1(flat, stripes)) > 0.05
    stripes, flat = stripes[:, :8, :8], flat[:, :8, :8]
    # Hand-computed: the 7x7 valid gradient window holds 2 columns of |dx|=1 over 7 rows,
    # so the line's detail is 0.5 * 14 / 49 and the blur's is 0.
    assert float(losses.gradient_energy_l1(flat, stripes, patch=7)) == pytest.approx(7 / 49)


def _variables(models):
    return [v.numpy().copy() for m in models for v in m.weights]


def test_supervised_step_trains_both_generators_on_their_pairs_only(tmp_path):
    from tfcartoon.data.dataset import training_dataset
    from tfcartoon.gan import CartoonGAN
    from tfcartoon.training.run import files_by_index, stage_files

    config = tiny_config(*BASE, *PAIRED, "face_id.model=null", "train.supervised_steps=4")
    data = make_paired(tmp_path / "pairs", partner=lambda a: 255 - a)
    gan = CartoonGAN(config)
    gan.build_optimizers()
    gan.supervised = True
    batch = next(iter(training_dataset(files_by_index(config, stage_files(config, data)),
                                       gan.plan.slots, config)))
    discriminators = _variables(gan.discriminators.values())
    others = _variables([gan.photo2cartoon.heads[3], gan.cartoon2photo.tails[1]])
    base = _variables([gan.photo2cartoon.heads[0], gan.cartoon2photo.tails[0],
                       gan.photo2cartoon.encoder])
    photo, cartoon = batch["photo"].numpy(), batch["cartoon"].numpy()
    fake = np.asarray(gan.photo2cartoon.route(photo, gan.plan.slots)["image"])
    back = np.asarray(gan.cartoon2photo.route(cartoon, gan.plan.slots)["image"])
    logs = gan.train_step(batch)
    assert set(logs) == {"g_loss", "g_paired", "g_paired_edge", "g_paired_texture"}
    # Weighted (loss.paired=10): L1 of photo->cartoon vs the pair's cartoon, and back.
    expected = 10 * (np.abs(fake - cartoon).mean() + np.abs(back - photo).mean())
    assert float(logs["g_paired"]) == pytest.approx(expected, rel=1e-4)
    for before, after in zip(discriminators, _variables(gan.discriminators.values())):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(others, _variables([gan.photo2cartoon.heads[3],
                                                 gan.cartoon2photo.tails[1]])):
        np.testing.assert_array_equal(before, after)
    moved = [not np.array_equal(b, a) for b, a in zip(base, _variables(
        [gan.photo2cartoon.heads[0], gan.cartoon2photo.tails[0], gan.photo2cartoon.encoder]))]
    assert sum(moved) > len(moved) // 2


def test_warm_up_then_adversarial_phase_and_resume(tmp_path):
    from tfcartoon.training.run import train

    data = make_paired(tmp_path / "pairs")
    config = tiny_config(*BASE, *PAIRED, "train.supervised_steps=2", "face_id.model=null")
    run = train(config, data, tmp_path / "run")
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert "d_loss" not in rows[0] and rows[0]["g_paired"] > 0  # warm-up: no discriminator
    assert rows[1]["d_loss"] > 0 and rows[1]["g_cycle"] > 0 and rows[1]["g_paired"] > 0


def test_init_from_a_run_of_another_image_size(base_run):
    from tfcartoon.gan import CartoonGAN
    from tfcartoon.training.run import init_from_base, load

    base = load(base_run)
    config = tiny_config("train.stage=fewshot", "train.group=elderly", "model.image_size=96",
                         "data.resize=104", "face_id.model=null")
    gan = CartoonGAN(config)
    init_from_base(gan, base_run)
    for name in ("young_women", "elderly"):
        for mine, theirs in zip(gan.photo2cartoon.group_variables(name),
                                base.photo2cartoon.group_variables("young_women")):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    photo = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    assert gan.photo2cartoon.group_model("elderly")(photo).shape == (1, 96, 96, 3)
