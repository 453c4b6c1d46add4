"""Presets: made from a run, loaded by name, used by --init, cartoonize and the exporters."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import require_shared, tiny_config


@pytest.fixture(scope="module")
def tiny_preset(base_run, tmp_path_factory):
    """A preset made from the tiny base run, in a temporary preset folder."""
    from tfcartoon.preset import make_preset

    root = tmp_path_factory.mktemp("presets")
    make_preset(base_run, "tiny", figures={"psnr_db": 1.0}, root=root)
    return root


@pytest.fixture
def presets_in(monkeypatch, tiny_preset):
    import tfcartoon.preset

    monkeypatch.setattr(tfcartoon.preset, "PRESET_DIR", tiny_preset)
    return tiny_preset


def test_a_preset_holds_the_base_generators_in_float16_keyed_by_path(presets_in, base_run):
    from tfcartoon.preset import file_sha256, read_preset
    from tfcartoon.training.run import latest_checkpoint

    meta, state = read_preset("tiny")
    assert meta["config"]["groups"] == ["young_women"]
    assert meta["source"]["checkpoint_sha256"] == file_sha256(latest_checkpoint(base_run))
    assert meta["figures"] == {"psnr_db": 1.0}
    assert {v.dtype for v in state.values()} == {np.dtype("float16")}
    assert "photo2cartoon/head/conv_block1_conv/kernel" in state
    assert "cartoon2photo/cam/gap_fc/kernel" in state
    assert not any("elderly" in key for key in state)  # only the base branch is stored


def test_load_preset_matches_the_run_it_was_made_from(presets_in, base_run):
    from tfcartoon.preset import load_preset
    from tfcartoon.training.run import load

    preset, run = load_preset("tiny"), load(base_run)
    photos = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    for name in ("photo2cartoon", "cartoon2photo"):
        ours = getattr(preset, name).group_model("young_women")(photos)
        theirs = getattr(run, name).group_model("young_women")(photos)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-2)
    assert preset.photo2cartoon.groups == ["young_women"]
    assert preset.step == run.step
    larger = load_preset("tiny", image_size=128)  # same weights at another size
    assert larger.config.model.image_size == 128
    out = larger.photo2cartoon.group_model("young_women")(photos.repeat(2, 1).repeat(2, 2))
    assert tuple(out.shape) == (2, 128, 128, 3)
    for mine, theirs in zip(larger.photo2cartoon.weights, preset.photo2cartoon.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_init_preset_copies_the_base_branch_into_every_group(presets_in):
    from tfcartoon.gan import CartoonGAN
    from tfcartoon.preset import load_preset
    from tfcartoon.training.run import TrainingError, init_from_base

    config = tiny_config("train.stage=fewshot", "train.group=elderly", "face_id.model=null")
    gan = CartoonGAN(config)
    assert str(init_from_base(gan, "preset:tiny")).endswith("weights.npz")
    preset = load_preset("tiny")
    for group in config.groups:
        for mine, theirs in zip(gan.cartoon2photo.group_variables(group),
                                preset.cartoon2photo.group_variables("young_women")):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for mine, theirs in zip(gan.photo2cartoon.shared_variables,
                            preset.photo2cartoon.shared_variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    wider = CartoonGAN(tiny_config("train.stage=fewshot", "model.ngf=12",
                                   "face_id.model=null"))
    with pytest.raises(TrainingError, match="model.ngf=8, this run has 12"):
        init_from_base(wider, "preset:tiny")
    with pytest.raises(TrainingError, match="unknown preset 'nope'; shipped presets: tiny"):
        init_from_base(gan, "preset:nope")


def test_an_existing_preset_is_not_replaced_without_overwrite(presets_in, base_run, capsys):
    from tfcartoon.preset import main

    before = (presets_in / "tiny" / "weights.npz").read_bytes()
    assert main([str(base_run), "--name", "tiny", "--root", str(presets_in)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (presets_in / "tiny" / "weights.npz").read_bytes() == before


# --- the shipped preset ---------------------------------------------------------------

def test_the_shipped_preset_is_listed_and_documented():
    from tfcartoon.preset import PRESET_DIR, available_presets, read_preset

    assert "young_women" in available_presets()
    meta, state = read_preset("young_women")
    assert meta["config"]["model"]["image_size"] == 256
    assert meta["config"]["model"]["ngf"] == 32
    assert len(state) > 0
    card = (PRESET_DIR / "young_women" / "MODEL_CARD.md").read_text()
    for needed in ("research", "p2c", "PSNR", "edge energy", "identity"):
        assert needed.lower() in card.lower()


def test_the_shipped_preset_cartoonizes_by_default():
    from tfcartoon.inference import load_cartoonizer

    cartoonizer = load_cartoonizer()
    assert cartoonizer.image_size == 256 and cartoonizer.group == "young_women"
    photo = np.full((1, 256, 256, 3), 0.8, np.float32)  # a white card: the output is
    photo[:, 64:192, 80:176] = -0.2                     # a cartoon, not the input
    cartoon = cartoonizer(photo)
    assert cartoon.shape == photo.shape and np.abs(cartoon).max() <= 1.0
    assert np.abs(cartoon - photo).mean() > 0.01


def test_the_shipped_preset_draws_photo2cartoon_cartoons_of_held_out_photos():
    """On held-out p2c pairs the preset is close to the reference model's own cartoons."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    from bench.bench_preset import load_pairs, measure
    from tfcartoon.inference import load_cartoonizer
    from tfcartoon.preset import read_preset

    data = require_shared("data", "p2c", "train")
    holdout = read_preset("young_women")[0]["config"]["data"]["holdout"]
    names, photos, references = load_pairs(data, 256, holdout)
    _, figures = measure(load_cartoonizer(), photos[:8], references[:8])
    assert figures["psnr_db"] > figures["psnr_photo_floor_db"] + 5
    assert figures["psnr_db"] > 18.0  # 21.05 dB on all 54 held-out pairs
    assert figures["edge_energy_ratio"] > 0.45  # 0.756 on all 54


def test_cartoonize_cli_uses_the_preset_without_model(tmp_path):
    raw = require_shared("data", "raw_photos", "celeba_hq", "female")
    photo = sorted(raw.iterdir())[0]
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "tfcartoon.cartoonize", str(photo), "-o",
                             str(out), "--report", str(tmp_path / "report.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(out.glob("*.png"))
    assert len(written) == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert photo.name in json.dumps(report)
