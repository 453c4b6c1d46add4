"""Checkpoints: keyed by variable path, resumable under another precision, format 1 still
read, damaged files skipped with a warning, temporaries of a killed write removed."""

import logging
import shutil

import numpy as np
import pytest

from tfcartoon.training.checkpoints import (
    CheckpointError, gan_entries, gan_state, generator_components, load_latest, read_index,
    restore_gan)
from tests.test_routing import _gan


def _scramble(gan, seed=0):
    """Give every weight and optimizer variable a distinct random value."""
    rng = np.random.default_rng(seed)
    for _, variable in gan_entries(gan):
        if "float" in str(variable.dtype):
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))


def _values(gan):
    return {key: np.array(v.numpy()) for key, v in gan_entries(gan)}


@pytest.fixture(scope="module")
def source():
    gan = _gan()
    _scramble(gan)
    return gan, gan_state(gan, 7)


def test_every_array_is_keyed_by_where_its_variable_sits(source):
    gan, state = source
    keys = [k for k in state if k not in ("step", "format")]
    assert int(state["format"]) == 2 and int(state["step"]) == 7
    assert not [k for k in keys if k.rsplit("/", 1)[-1].isdigit()]  # nothing by position
    # the two generators' same-named weights get their own Adam slots
    head = next(k for k in keys if k.startswith("photo2cartoon/head_young_women/"))
    twin = head.replace("photo2cartoon/", "cartoon2photo/", 1)
    for slot in ("momentum", "velocity"):
        assert f"generator_optimizer/{head}/{slot}" in state
        assert f"generator_optimizer/{twin}/{slot}" in state
        assert not np.array_equal(state[f"generator_optimizer/{head}/{slot}"],
                                  state[f"generator_optimizer/{twin}/{slot}"])
    n_vars = len(gan_entries(gan))
    assert len(keys) == n_vars == len({id(v) for _, v in gan_entries(gan)})


def test_restore_puts_each_array_back_by_key(source):
    gan, state = source
    target = _gan()
    shuffled = dict(reversed(list(state.items())))
    assert restore_gan(target, shuffled, "test") == 7
    expected, got = _values(gan), _values(target)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_a_renamed_or_extra_array_is_an_error_naming_it(source):
    _, state = source
    key = next(k for k in state if k.startswith("photo2cartoon/shared_encoder/"))
    renamed = {("photo2cartoon/shared_encoder/moved" if k == key else k): v
               for k, v in state.items()}
    with pytest.raises(CheckpointError, match=f"no array for '{key}'"):
        restore_gan(_gan(), renamed, "ckpt.npz")
    with pytest.raises(CheckpointError, match="fit no variable.*extra/kernel"):
        restore_gan(_gan(), {**state, "photo2cartoon/extra/kernel": np.zeros(1)}, "ckpt.npz")


@pytest.mark.parametrize("saved, resumed", [("float32", "mixed_float16"),
                                            ("mixed_float16", "float32")])
def test_a_run_resumes_under_another_precision(saved, resumed):
    gan = _gan(precision=saved)
    _scramble(gan, seed=1)
    state = gan_state(gan, 3)
    target = _gan(precision=resumed)
    assert restore_gan(target, state, "test") == 3
    expected, got = _values(gan), _values(target)
    shared = expected.keys() & got.keys()
    only = (expected.keys() | got.keys()) - shared
    # weights and Adam moments carry over; only the loss-scale wrapper's own variables
    # differ, and a float32 -> mixed resume starts its loss scale fresh
    assert only and all("/loss_scale_optimizer/" in k for k in only)
    for key in shared:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    if resumed == "mixed_float16":
        scale = next(v for k, v in got.items() if k.endswith("dynamic_scale"))
        assert float(scale) == target.config.train.initial_loss_scale


def test_format_1_checkpoints_by_position_still_load(source):
    gan, _ = source
    state = {"step": np.asarray(5)}
    for gen_name in ("photo2cartoon", "cartoon2photo"):
        for part, layer in generator_components(getattr(gan, gen_name)).items():
            for i, v in enumerate(layer.weights):
                state[f"{gen_name}/{part}/{i:04d}"] = np.array(v.numpy())
    for name, disc in gan.discriminators.items():
        for i, v in enumerate(disc.weights):
            state[f"{name}/{i:04d}"] = np.array(v.numpy())
    for label in ("generator_optimizer", "discriminator_optimizer"):
        for i, v in enumerate(getattr(gan, label).variables):
            state[f"{label}/{i:04d}"] = np.array(v.numpy())
    target = _gan()
    assert restore_gan(target, state, "old.npz") == 5
    restored = _values(target)
    for key, value in _values(gan).items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)


def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(base_run, tmp_path, caplog):
    from tfcartoon.training.run import load

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    steps = [e["step"] for e in read_index(run)]
    assert len(steps) >= 2
    newest = run / "checkpoints" / read_index(run)[-1]["file"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        loaded = load(run)
    assert loaded.step == steps[-2]
    assert any(newest.name in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    for entry in read_index(run):
        (run / "checkpoints" / entry["file"]).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*damaged"):
        load_latest(run)


def test_resume_removes_what_a_killed_checkpoint_write_left(data_dir, base_run, tmp_path):
    from tfcartoon.training.run import train

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    leftovers = [run / "checkpoints" / ".step-00000006.npz.x1y2.tmp",
                 run / "checkpoints" / ".index.json.a1b2.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    before = read_index(run)
    train(None, data_dir, run, resume=True)  # already at its last step: loads, trains nothing
    assert not any(path.exists() for path in leftovers)
    assert read_index(run) == before
