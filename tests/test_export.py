"""TFLite and ONNX export: parity gates, builtin ops, model cards, app and multi-group files.

Tiny generators (ngf=8, 64x64, one-level hourglasses) keep conversions short; the
multi-group size test uses full width and depth, and one test exports the real
256x256 group path. Parity runs on real p2c photos when ../shared is present and on
synthetic images otherwise.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tfcartoon
from export import common, to_onnx, to_tflite
from tests.helpers import GROUPS
from tfcartoon import build_generator

ROOT = Path(__file__).resolve().parent.parent
TINY_GROUPS = ["young_women", "young_men"]


def build_and_save(path, groups, ngf, image_size, hourglass_depth=4):
    """Build a seeded generator, save it as ``path`` (.keras) and return it."""
    keras.utils.set_random_seed(0)
    generator = build_generator(groups, ngf=ngf, image_size=image_size,
                                hourglass_depth=hourglass_depth)
    generator.save(path)
    return generator


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.keras"
    build_and_save(path, TINY_GROUPS, ngf=8, image_size=64, hourglass_depth=1)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return common.load_generator(tiny_checkpoint)


@pytest.fixture(scope="module")
def parity(tiny):
    photos, source = common.parity_images(tiny.image_size, count=4)
    return photos, source


@pytest.fixture(scope="module")
def fp32_export(tiny, tiny_checkpoint, parity, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    path, card = to_tflite.export_tflite(tiny, tiny_checkpoint, out, precision="fp32",
                                         group="young_women", parity=parity)
    return path, card


@pytest.fixture(scope="module")
def onnx_export(tiny, tiny_checkpoint, parity, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return to_onnx.export_onnx(tiny, tiny_checkpoint, out, "young_women", parity=parity)


def assert_builtin(ops):
    assert ops and not [op for op in ops if op.startswith("CUSTOM:")], ops


# === TFLite ===

def test_fp32_tflite_passes_gate_with_builtin_ops(fp32_export):
    path, card = fp32_export
    data = path.read_bytes()
    ops = to_tflite.tflite_ops(data)
    assert_builtin(ops)
    assert "MIRROR_PAD" in ops  # reflection padding stays a builtin op
    assert not common.GATES["fp32"].failures(card["parity"])
    assert card["parity"]["max_abs_err"] < 2e-3
    signature = Interpreter(model_content=data).get_signature_list()
    assert signature == {"cartoonize": {"inputs": ["photo"], "outputs": ["cartoon"]}}


def test_model_card_fields(fp32_export, tiny, tiny_checkpoint):
    path, card = fp32_export
    on_disk = json.loads(path.with_name(path.name + ".json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["file"] == path.name == "young_women_fp32.tflite"
    assert card["groups"] == ["young_women"] and card["precision"] == "fp32"
    assert card["inputs"] == [{"name": "photo", "shape": [1, 64, 64, 3], "dtype": "float32",
                               "range": [-1.0, 1.0]}]
    assert card["outputs"][0]["name"] == "cartoon"
    assert set(card["parity"]) >= {"max_abs_err", "mean_abs_err", "psnr_db", "gate", "images"}
    assert card["file_size_bytes"] == path.stat().st_size
    mode = 0o666 & ~_umask()  # what a plain open() gives, not mkstemp's 0600
    assert {p.stat().st_mode & 0o777 for p in (path, path.with_name(path.name + ".json"))} == {mode}
    assert card["params"] == tiny.group_model("young_women").count_params()
    assert card["source"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert card["tfcartoon_version"] == tfcartoon.__version__
    assert card["ops"] == sorted(to_tflite.tflite_ops(path.read_bytes()))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_lower_precision_tflite_passes_gate(precision, tiny, tiny_checkpoint, parity, fp32_export,
                                            tmp_path):
    path, card = to_tflite.export_tflite(tiny, tiny_checkpoint, tmp_path, precision=precision,
                                         group="young_women", parity=parity)
    assert path.name == f"young_women_{precision}.tflite"
    assert_builtin(card["ops"])
    assert card["parity"]["psnr_db"] >= common.GATES[precision].min_psnr_db
    assert path.stat().st_size < 0.7 * fp32_export[0].stat().st_size


def test_gate_refuses_a_wrong_model_and_writes_nothing(monkeypatch, tiny, tiny_checkpoint,
                                                       parity, fp32_export, tmp_path):
    # The young_women file offered as the young_men export: converts fine, disagrees.
    wrong = fp32_export[0].read_bytes()
    monkeypatch.setattr(to_tflite, "convert", lambda *args, **kwargs: wrong)
    with pytest.raises(common.ParityError, match=r"young_men_fp32.tflite \[young_men\]"):
        to_tflite.export_tflite(tiny, tiny_checkpoint, tmp_path, group="young_men",
                                parity=parity)
    assert list(tmp_path.iterdir()) == []


def test_gate_refuses_non_builtin_ops():
    @tf.function(input_signature=[tf.TensorSpec((4,), tf.float32)])
    def cumprod(x):  # no builtin kernel: converted as a Flex (TF Select) op
        return tf.math.cumprod(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [cumprod.get_concrete_function()], cumprod)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(common.UnsupportedOpsError, match="FlexCumprod"):
        to_tflite.check_builtin_ops(converter.convert(), "cumprod.tflite")


def test_existing_outputs_are_not_overwritten(monkeypatch, tiny, tiny_checkpoint, parity,
                                              fp32_export):
    path, _ = fp32_export
    before = path.read_bytes()

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted although the output exists")

    monkeypatch.setattr(to_tflite, "convert", must_not_convert)
    with pytest.raises(FileExistsError, match="--overwrite"):
        to_tflite.export_tflite(tiny, tiny_checkpoint, path.parent, group="young_women",
                                parity=parity)
    assert path.read_bytes() == before
    monkeypatch.setattr(to_tflite, "convert", lambda *args, **kwargs: before)
    _, card = to_tflite.export_tflite(tiny, tiny_checkpoint, path.parent, group="young_women",
                                      overwrite=True, parity=parity)
    assert card["file_size_bytes"] == len(before)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".json"]


def test_app_variant_is_uint8_and_matches_the_float_model(tiny, tiny_checkpoint, parity,
                                                          tmp_path):
    path, card = to_tflite.export_tflite(tiny, tiny_checkpoint, tmp_path, group="young_women",
                                         app=True, parity=parity)
    assert path.name == "young_women_fp32_app.tflite"
    assert card["inputs"][0]["dtype"] == "uint8" and card["outputs"][0]["dtype"] == "uint8"
    runner = Interpreter(model_path=str(path)).get_signature_runner("cartoonize")
    photos, _ = parity
    cartoon = np.concatenate([runner(photo=photo[None])["cartoon"] for photo in photos])
    assert cartoon.dtype == np.uint8 and cartoon.shape == photos.shape
    expected = common.to_levels(tiny.group_model("young_women").predict(
        common.photos_to_float(photos), verbose=0))
    assert np.abs(cartoon.astype(int) - expected.astype(int)).max() <= 1


def test_multigroup_file_stores_the_trunk_once(tmp_path):
    # Full width (ngf=32) so that weights, not graph metadata, dominate the size as in
    # the real model; image size does not change the file.
    generator = build_and_save(tmp_path / "four.keras", GROUPS, ngf=32, image_size=32)
    photos, source = common.parity_images(32, count=2)
    single, _ = to_tflite.export_tflite(generator, tmp_path / "four.keras", tmp_path,
                                        group="young_women", parity=(photos, source))
    multi, card = to_tflite.export_tflite(generator, tmp_path / "four.keras", tmp_path,
                                          multigroup=True, parity=(photos, source))
    ratio = multi.stat().st_size / single.stat().st_size
    # measured 1.200 (the trunk once, four branches); four trunks would be ~3.6x
    assert ratio <= 1.3, f"multi-group file is {ratio:.3f}x a single-group file"
    assert card["group_index"] == {name: index for index, name in enumerate(GROUPS)}
    assert set(card["parity"]["per_group"]) == set(GROUPS)
    for figures in card["parity"]["per_group"].values():
        assert not common.GATES["fp32"].failures(figures)
    assert card["inputs"][1] == {"name": "group", "shape": [1], "dtype": "int32", "range": [0, 3]}
    # cartoonize/load_cartoonizer read the group index from the card beside the file
    from tfcartoon.inference import ModelLoadError, load_cartoonizer

    floats = common.photos_to_float(photos)
    for group in ("kids", "young_women"):
        loaded = load_cartoonizer(multi, group)
        expected = generator.group_model(group).predict(floats, verbose=0)
        assert loaded.group == group
        np.testing.assert_allclose(loaded(floats), expected, atol=2e-3)
    with pytest.raises(ModelLoadError, match="choose one"):
        load_cartoonizer(multi)
    assert load_cartoonizer(single).group == "young_women"
    with pytest.raises(ModelLoadError, match="model card says it draws 'young_women', not 'kids'"):
        load_cartoonizer(single, "kids")


@pytest.fixture(scope="module")
def real_size():
    """The shipped young_women preset (reference size: ngf=32, 256x256), its weights file,
    and 8 parity photos. A trained model, as users export it: the int8 gate is about
    real activations (a random network's int8 export scores ~28 dB, a trained one ~39 dB)."""
    generator, weights = common.load_checkpoint(None)
    return generator, weights, common.parity_images(256)


def test_real_size_group_path_fp32_tflite(real_size, tmp_path):
    generator, checkpoint, parity = real_size
    path, card = to_tflite.export_tflite(generator, checkpoint, tmp_path, group="young_women",
                                         parity=parity)
    assert card["params"] == 3_831_079
    assert card["inputs"][0]["shape"] == [1, 256, 256, 3]
    assert not common.GATES["fp32"].failures(card["parity"])
    assert_builtin(card["ops"])


def test_real_size_int8_onnx_quantizes_convs_and_passes_its_gate(real_size, tmp_path):
    generator, checkpoint, parity = real_size
    fp32_size = 3_831_079 * 4
    path, card = to_onnx.export_onnx(generator, checkpoint, tmp_path, "young_women",
                                     parity=parity, quick=True, precision="int8")
    assert path.name == "young_women_int8.onnx" and card["precision"] == "int8"
    assert card["parity"]["gate"] == {"min_psnr_db": 30.0}
    assert card["parity"]["psnr_db"] >= 30.0
    graph = onnx.load(str(path)).graph
    weights = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    weight_types = []
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        source = producers.get(conv.input[1])
        weight_types.append(weights[source.input[0]].data_type
                            if source is not None and source.op_type == "DequantizeLinear"
                            else weights[conv.input[1]].data_type)
    # every conv but the image-in and image-out ones reads int8 weights
    assert weight_types[0] == weight_types[-1] == onnx.TensorProto.FLOAT
    assert set(weight_types[1:-1]) == {onnx.TensorProto.INT8}
    # the AdaLIN MLP's dense layers are int8 too: nearly every parameter is one byte
    int8_weights = sum(int(np.prod(t.dims)) for t in graph.initializer
                       if t.data_type == onnx.TensorProto.INT8)
    assert int8_weights > 0.95 * 3_831_079
    assert card["file_size_bytes"] < 0.45 * fp32_size  # measured 0.35 (graph overhead)


def test_real_size_group_path_fp16_tflite(real_size, tmp_path):
    generator, checkpoint, parity = real_size
    _, card = to_tflite.export_tflite(generator, checkpoint, tmp_path, precision="fp16",
                                      group="young_women", parity=(parity[0][:2], parity[1]))
    assert card["parity"]["psnr_db"] >= 40.0


# === ONNX ===

def test_onnx_export_passes_gate(onnx_export, parity, tiny):
    path, card = onnx_export
    assert path.name == "young_women.onnx" and card["format"] == "onnx"
    assert not common.GATES["fp32"].failures(card["parity"])
    assert not [op for op in card["ops"] if "::" in op]  # default ONNX domain only
    photos, _ = parity
    output = to_onnx.run_onnx(path.read_bytes(), photos)
    expected = tiny.group_model("young_women").predict(common.photos_to_float(photos), verbose=0)
    np.testing.assert_allclose(output, expected, atol=2e-3)


def onnx_input_shape(path):
    """The ``photo`` input's dims (ints, or the symbolic name) of an ONNX file."""
    (photo,) = onnx.load(str(path)).graph.input
    return [dim.dim_param or dim.dim_value for dim in photo.type.tensor_type.shape.dim]


def test_onnx_export_fixes_batch_one_and_still_runs_batches(onnx_export, parity):
    path, card = onnx_export
    assert onnx_input_shape(path) == [1, 64, 64, 3]
    assert card["inputs"][0]["shape"] == [1, 64, 64, 3]
    photos, _ = parity
    assert len(photos) > 1 and to_onnx.run_onnx(path.read_bytes(), photos).shape == (
        len(photos), 64, 64, 3)


def test_onnx_export_with_any_batch(tiny, tiny_checkpoint, parity, tmp_path):
    path, card = to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_men", quick=True,
                                     parity=parity, batch=None)
    assert isinstance(onnx_input_shape(path)[0], str)
    assert card["inputs"][0]["shape"][0] == "N"
    assert not common.GATES["fp32"].failures(card["parity"])


def test_onnx_export_with_a_batch_that_does_not_divide_the_photos(tiny, tiny_checkpoint, parity,
                                                                   tmp_path):
    photos, _ = parity
    assert len(photos) % 3
    path, card = to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_men", quick=True,
                                     parity=parity, batch=3)
    assert onnx_input_shape(path)[0] == 3
    assert not common.GATES["fp32"].failures(card["parity"])
    expected = tiny.group_model("young_men").predict(common.photos_to_float(photos), verbose=0)
    np.testing.assert_allclose(to_onnx.run_onnx(path.read_bytes(), photos), expected, atol=2e-3)


@pytest.mark.parametrize("batch", [0, -1, 1.5, "2"])
def test_onnx_rejects_a_bad_batch(tiny, tiny_checkpoint, tmp_path, batch):
    with pytest.raises(ValueError, match="batch must be a positive int"):
        to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_women", batch=batch)
    assert list(tmp_path.iterdir()) == []


def test_onnx_cli_batch_option():
    assert to_onnx.parse_args(["--model", "m", "--out", "o"]).batch == 1
    assert to_onnx.parse_args(["--model", "m", "--out", "o", "--batch", "any"]).batch is None
    assert to_onnx.parse_args(["--model", "m", "--out", "o", "--batch", "4"]).batch == 4
    with pytest.raises(SystemExit):
        to_onnx.parse_args(["--model", "m", "--out", "o", "--batch", "0"])


def test_onnx_int8_gate_refuses_the_tiny_model(tiny, tiny_checkpoint, parity, tmp_path):
    # 8 channels of random weights lose too much in int8 (~28 dB): the gate must say so.
    with pytest.raises(common.ParityError, match=r"young_women_int8.onnx.*PSNR .* < 30 dB"):
        to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_women", parity=parity,
                            quick=True, precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_onnx_rejects_an_unknown_precision(tiny, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_women", precision="fp16")


def test_onnx_export_fuses_norms_and_upsampling(onnx_export):
    # to_onnx.fuse_graph: instance norms -> InstanceNormalization, UpSampling2D -> Resize.
    _, card = onnx_export
    assert {"InstanceNormalization", "Resize"} <= set(card["ops"])
    assert "Tile" not in card["ops"]


def test_onnx_gate_refuses_a_wrong_model(monkeypatch, onnx_export, tiny, tiny_checkpoint, parity,
                                         tmp_path):
    wrong = onnx_export[0].read_bytes()
    monkeypatch.setattr(to_onnx, "convert", lambda *args, **kwargs: wrong)
    with pytest.raises(common.ParityError, match="young_men.onnx"):
        to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_men", parity=parity)
    assert list(tmp_path.iterdir()) == []


def test_onnx_rejects_opset_above_18(tiny, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        to_onnx.export_onnx(tiny, tiny_checkpoint, tmp_path, "young_women", opset=19)


# === Loading ===

def test_mixed_precision_generator_is_rebuilt_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    mixed = build_generator(TINY_GROUPS, ngf=8, image_size=32, hourglass_depth=1)
    keras.config.set_dtype_policy("float32")
    assert "float16" in common.compute_dtypes(mixed)
    rebuilt = common.as_float32(mixed)
    assert common.compute_dtypes(rebuilt) == {"float32"}
    for got, want in zip(rebuilt.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert common.as_float32(rebuilt) is rebuilt


def test_load_generator_reads_run_directories_through_tfcartoon_load(monkeypatch, tmp_path,
                                                                     tiny):
    class Run:
        photo2cartoon = tiny
        checkpoint = tmp_path / "checkpoints" / "step_100.npz"

    monkeypatch.setattr(tfcartoon, "load", lambda path: Run(), raising=False)
    assert common.load_generator(tmp_path) is tiny
    assert common.load_checkpoint(tmp_path) == (tiny, Run.checkpoint)
    monkeypatch.delattr(tfcartoon, "load")  # back to the package's own loader
    from tfcartoon.training.run import TrainingError

    with pytest.raises(TrainingError, match="is not a run directory"):
        common.load_generator(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        common.load_generator(tmp_path / "missing.keras")


def test_cli_exports_every_group_and_refuses_to_overwrite(tiny_checkpoint, tmp_path, capsys):
    argv = ["--model", str(tiny_checkpoint), "--group", "all", "--out", str(tmp_path)]
    assert to_tflite.main(argv) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{group}_fp32.tflite{suffix}" for group in TINY_GROUPS
                           for suffix in ("", ".json"))
    card = json.loads((tmp_path / "young_men_fp32.tflite.json").read_text())
    assert card["source"]["path"] == str(tiny_checkpoint.resolve())
    # the output and the card say which images the parity check used (real or synthetic)
    _, source = common.parity_images(64)
    assert card["parity"]["images"] == source
    assert f"on {source}" in capsys.readouterr().out
    assert to_tflite.main(argv) == 1
    assert "already exist" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["export/to_tflite.py", "export/to_onnx.py"])
def test_scripts_run_from_the_repository_root(script):
    # -X importtime lists every module imported: --help must not load TensorFlow
    result = subprocess.run([sys.executable, "-X", "importtime", script, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout and "--overwrite" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "tfcartoon" not in imported and not {"tensorflow", "onnx"} & imported
    result = subprocess.run([sys.executable, script, "--precision", "fp8", "--out", "x"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--precision: invalid choice: 'fp8'" in result.stderr


# === A smoke-trained run (configs/smoke.yaml) ===

def test_smoke_trained_run_exports_pass_their_gates(elderly_run, tmp_path, capsys):
    # The run directory itself is the --model; every file is written only past its gate.
    argv = ["--model", str(elderly_run), "--group", "elderly", "--out", str(tmp_path)]
    assert to_tflite.main(argv + ["--precision", "fp16"]) == 0
    assert to_onnx.main(argv + ["--quick"]) == 0
    for name in ("elderly_fp16.tflite", "elderly.onnx"):
        card = json.loads((tmp_path / f"{name}.json").read_text())
        assert card["groups"] == ["elderly"] and (tmp_path / name).is_file()
        gate = common.GATES[card["precision"]]
        assert not gate.failures(card["parity"]), (name, card["parity"])
        assert card["source"]["path"].startswith(str(elderly_run.resolve()))
    assert "not trained" not in capsys.readouterr().err
    # the elderly run trained only elderly (and kept the base branch): kids is a copy
    assert common.untrained_groups(elderly_run, ["young_women", "kids", "elderly"]) == ["kids"]
    assert common.untrained_groups(None, ["kids"]) == []


def test_export_clis_report_bad_models_and_conflicting_options_in_one_line(tmp_path, capsys):
    from export import to_onnx, to_tflite

    for main in (to_tflite.main, to_onnx.main):
        assert main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --model ") and "no such file" in err
        assert len(err.strip().splitlines()) == 1
    assert to_tflite.main(["--multigroup", "--group", "elderly", "--out", str(tmp_path)]) == 2
    assert "--group elderly cannot apply" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
