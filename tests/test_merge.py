"""Merging per-group strict runs into one model (python -m tfcartoon.merge)."""

import json
import logging
import os

import numpy as np
import pytest

from tests.helpers import GROUPS, tiny_config

GENERATORS = ("photo2cartoon", "cartoon2photo")


def _generators(config):
    from tfcartoon.models.generator import build_generator

    return {name: build_generator(config.groups, config.model.ngf, config.model.image_size,
                                  config.model.hourglass_depth, name=name)
            for name in GENERATORS}


def _write_run(run_dir, config, generators, step=4):
    """A run folder as training leaves it, generators only (all that merge and load read)."""
    from tfcartoon.training.checkpoints import FORMAT, generator_entries, write_state

    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    state = {"step": np.asarray(step, np.int64), "format": np.asarray(FORMAT, np.int64)}
    for name, generator in generators.items():
        state.update({k: np.asarray(v.numpy()) for k, v in generator_entries(generator, name)})
    write_state(run_dir, state, step)
    return run_dir


def _perturb(variables, seed):
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(v.numpy() + rng.normal(0, 0.05, v.shape).astype(v.dtype))


@pytest.fixture(scope="module")
def strict_runs(tmp_path_factory):
    """Two strict runs from one base: 'elderly' and 'kids' trained, the rest copies."""
    root = tmp_path_factory.mktemp("merge")
    base = _generators(tiny_config("train.stage=fewshot", "face_id.model=null"))
    for generator in base.values():
        for group in GROUPS[1:]:
            generator.copy_group(GROUPS[0], group)
    runs = {}
    for index, group in enumerate(("elderly", "kids")):
        config = tiny_config("train.stage=fewshot", f"train.group={group}",
                             "face_id.model=null")
        generators = _generators(config)
        for name, generator in generators.items():
            generator.set_weights(base[name].get_weights())
            _perturb(generator.group_variables(group), seed=index)
        runs[group] = _write_run(root / group, config, generators, step=4 + index)
    return runs


def _outputs(run_dir, group):
    from tfcartoon.training.run import load

    photo = np.random.default_rng(3).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    return load(run_dir).photo2cartoon.group_model(group)(photo).numpy()


def test_merged_model_draws_each_group_as_the_run_that_trained_it(strict_runs, tmp_path,
                                                                   caplog):
    from tfcartoon import inference
    from tfcartoon.merge import merge_runs
    from tfcartoon.training.run import load

    out = merge_runs([strict_runs["elderly"], strict_runs["kids"]], tmp_path / "merged")
    merged = load(out)
    assert merged.config.groups == ["young_women", "elderly", "kids"]
    assert merged.config.train.stage == "fewshot" and merged.config.train.group is None
    assert merged.step == 5
    for group, source in (("elderly", "elderly"), ("kids", "kids"), ("young_women", "kids")):
        np.testing.assert_array_equal(_outputs(out, group), _outputs(strict_runs[source], group))
    record = json.loads((out / "provenance.json").read_text())
    assert [s["groups"] for s in record["merged_from"]] == [["young_women", "elderly"],
                                                            ["kids"]]
    assert all(len(s["sha256"]) == 64 for s in record["merged_from"])
    with caplog.at_level(logging.WARNING):  # every branch it holds was trained
        inference.load_cartoonizer(out, "kids")
    assert not caplog.records


def test_runs_with_different_trunks_are_refused_naming_the_variables(strict_runs, tmp_path):
    from tfcartoon.merge import MergeError, merge_runs
    from tfcartoon.training.run import load, read_run_config

    run = load(strict_runs["kids"])
    _perturb(run.photo2cartoon.encoder.weights[:1], seed=7)
    moved = _write_run(tmp_path / "moved", read_run_config(strict_runs["kids"]),
                       {"photo2cartoon": run.photo2cartoon, "cartoon2photo": run.cartoon2photo})
    with pytest.raises(MergeError, match=r"different trunks: 1 variable differs "
                                         r"\(photo2cartoon/shared_encoder/.*strict"):
        merge_runs([strict_runs["elderly"], moved], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_group_trained_twice_differently_is_refused(strict_runs, tmp_path):
    from tfcartoon.merge import MergeError, merge_runs
    from tfcartoon.training.run import load, read_run_config

    run = load(strict_runs["elderly"])
    _perturb(run.photo2cartoon.group_variables("elderly"), seed=9)
    other = _write_run(tmp_path / "other", read_run_config(strict_runs["elderly"]),
                       {"photo2cartoon": run.photo2cartoon, "cartoon2photo": run.cartoon2photo})
    with pytest.raises(MergeError, match="both trained 'elderly', differently"):
        merge_runs([strict_runs["elderly"], other], tmp_path / "out")


def test_cli_refuses_a_used_folder_and_a_merged_model_cannot_be_resumed(strict_runs, tmp_path,
                                                                        capsys):
    from tfcartoon.merge import main
    from tfcartoon.training.run import TrainingError, train

    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    runs = [str(strict_runs["elderly"]), str(strict_runs["kids"])]
    assert main([*runs, "--out", str(used)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and len(err.strip().splitlines()) == 1
    assert (used / "keep.txt").read_text() == "mine"
    assert main([*runs, "--out", str(tmp_path / "merged")]) == 0
    assert "merged model: " in capsys.readouterr().out
    with pytest.raises(TrainingError, match="is a merged model"):
        train(None, tmp_path, tmp_path / "merged", resume=True)


@pytest.fixture(scope="module")
def chained_runs(tmp_path_factory):
    """Two base runs of one model, the second a perturbed continuation of the first."""
    root = tmp_path_factory.mktemp("average")
    config = tiny_config("face_id.model=null")
    first = _generators(config)
    second = _generators(config)
    for name, generator in second.items():
        generator.set_weights(first[name].get_weights())
        _perturb(generator.weights, seed=5)
    return (_write_run(root / "first", config, first, step=7),
            _write_run(root / "second", config, second, step=9))


def test_averaged_model_holds_the_weighted_mean_of_the_runs(chained_runs, tmp_path):
    from tfcartoon.average import average_runs
    from tfcartoon.training.run import load

    out = average_runs(chained_runs, tmp_path / "mean", weights=[0.3, 0.7])
    mean, first, second = load(out), load(chained_runs[0]), load(chained_runs[1])
    assert mean.step == 9 and mean.config.groups == second.config.groups
    for name in GENERATORS:
        pairs = zip(getattr(mean, name).weights, getattr(first, name).weights,
                    getattr(second, name).weights)
        for m, a, b in pairs:
            np.testing.assert_allclose(m.numpy(), 0.3 * a.numpy() + 0.7 * b.numpy(),
                                       rtol=1e-6, atol=1e-6)
    assert not np.array_equal(_outputs(out, "young_women"),
                              _outputs(chained_runs[1], "young_women"))
    record = json.loads((out / "provenance.json").read_text())
    assert [s["weight"] for s in record["averaged_from"]] == [0.3, 0.7]
    mask = os.umask(0o022)
    os.umask(mask)
    for written in (out / "checkpoints").iterdir():  # atomic, yet not mkstemp's 0600
        assert written.stat().st_mode & 0o777 == 0o666 & ~mask, written
    assert all(len(s["sha256"]) == 64 for s in record["averaged_from"])


@pytest.mark.parametrize("weights, message", [
    ([0.5], "1 values for 2 runs"),
    ([0.5, 0.6], "add up to 1.1"),
    ([1.5, -0.5], "must be > 0"),
])
def test_average_refuses_bad_weights(chained_runs, tmp_path, weights, message):
    from tfcartoon.average import average_runs
    from tfcartoon.merge import MergeError

    with pytest.raises(MergeError, match=f"--weights.*{message}"):
        average_runs(chained_runs, tmp_path / "out", weights=weights)
    assert not (tmp_path / "out").exists()


def test_average_refuses_runs_of_other_groups_and_cannot_be_resumed(chained_runs, tmp_path,
                                                                   capsys):
    from tfcartoon.average import main
    from tfcartoon.training.run import TrainingError, train

    config = tiny_config("face_id.model=null", "groups=[young_women, elderly]")
    two = _write_run(tmp_path / "two", config, _generators(config))
    assert main([str(chained_runs[0]), str(two), "--out", str(tmp_path / "mixed")]) == 2
    assert "has groups" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()
    assert main([*map(str, chained_runs), "--out", str(tmp_path / "mean")]) == 0
    assert "averaged model: " in capsys.readouterr().out
    with pytest.raises(TrainingError, match="is an averaged model"):
        train(None, tmp_path, tmp_path / "mean", resume=True)
