from pathlib import Path

import pytest

from tfcartoon.config import ConfigError, load_config, parse_override


def test_defaults_are_the_reference_hyper_parameters():
    config = load_config()
    assert config.groups == ["young_women", "young_men", "kids", "elderly"]
    assert (config.model.image_size, config.model.ngf, config.model.hourglass_depth) == (256, 32, 4)
    assert (config.loss.cycle, config.loss.identity, config.loss.cam) == (50.0, 10.0, 1000.0)
    assert (config.train.lr, config.train.beta_1, config.train.weight_decay) == (1e-4, 0.5, 1e-4)


def test_overrides_are_parsed_as_yaml_values():
    config = load_config(None, ["train.steps=12", "loss.cycle=20", "train.group=kids",
                                "groups=[a, b, kids]", "train.stage=fewshot",
                                "train.log_every=4"])
    assert config.train.steps == 12 and config.loss.cycle == 20.0
    assert config.fewshot_groups == ["kids"]
    assert parse_override("a.b=") == {"a": {"b": None}}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key train\.'stpes'.*'steps'"):
        load_config(None, ["train.stpes=3"])


@pytest.mark.parametrize("override, message", [
    ("train.steps=many", "train.steps must be of type int"),
    ("train.update_rule=loose", "train.update_rule must be one of"),
    ("train.group=young_women", "is the base group"),
    ("train.group=teens", "is not one of groups"),
    ("model.image_size=100", "multiple of 16"),
    ("train.steps=0", "train.steps must be at least 1"),
    ("data.resize=128", "data.resize .* must be at least model.image_size"),
    ("data.pool_groups=[teens]", r"data.pool_groups \['teens'\] not in groups"),
    ("data.pool_groups=[kids, kids]", "lists a group twice"),
    ("train.group=kids", "train.group='kids' applies to the fewshot stage only"),
    ("train.update_rule=full", "train.update_rule='full' applies to the fewshot stage only"),
    ("train.lr=0", "train.lr must be a positive number"),
    ("train.lr=.nan", "train.lr must be a positive number"),
    ("loss.cycle=-1", "loss.cycle must be a finite number >= 0"),
    ("loss.cam=.nan", "loss.cam must be a finite number >= 0"),
    ("face_id.weight=-0.5", "face_id.weight must be a finite number >= 0"),
    ("model.hourglass_depth=5", "model.hourglass_depth must be 1, 2, 3 or 4"),
    ("model.image_size=64", r"model.global_layers=7 needs images of at least 96 px.*6 layers"),
    ("train.steps=150", r"train.steps \(150\) must be a multiple of train.log_every \(100\)"),
])
def test_bad_values_name_the_key_and_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_saved_base_runs_with_the_old_strict_default_still_load():
    from tfcartoon.config import config_from_dict

    values = load_config().to_dict()
    values["train"]["update_rule"] = "strict"  # what base runs used to record
    assert config_from_dict(values).train.update_rule is None
    values["train"]["update_rule"] = "full"
    with pytest.raises(ConfigError, match="fewshot stage only"):
        config_from_dict(values)


def test_pool_groups_is_for_the_base_stage_only():
    with pytest.raises(ConfigError, match="base stage only"):
        load_config(None, ["train.stage=fewshot", "data.pool_groups=[kids]"])


def test_config_files_load(tmp_path):
    found = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert {"base", "fewshot", "smoke", "baseline1", "baseline2", "baseline3",
            "fewshot_full"} <= set(found)
    for name in found:
        config = load_config(CONFIGS / f"{name}.yaml")
        assert config.groups[0] == "young_women"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_baseline_configs_say_what_each_baseline_trains():
    one, two, three = (load_config(CONFIGS / f"baseline{i}.yaml") for i in (1, 2, 3))
    assert one.train.stage == two.train.stage == three.train.stage == "base"
    assert one.data.pool_groups == one.groups
    assert two.data.pool_groups == one.groups[1:]
    assert three.data.pool_groups == ["elderly"]
    assert load_config(CONFIGS / "fewshot_full.yaml").train.update_rule == "full"
