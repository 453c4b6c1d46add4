"""Merging per-group strict runs into one model (python -m tfcartoon.merge)."""

import json
import logging

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
