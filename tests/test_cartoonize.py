"""The cartoonize command (python -m tfcartoon.cartoonize) and the model loaders of tfcartoon.inference."""

import csv
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfcartoon
from tests.helpers import require_shared
from tfcartoon import cartoonize, inference
from tfcartoon.data.images import read_image

REPO = Path(__file__).resolve().parent.parent
GROUPS = ["young_women", "elderly"]
SIZE = 64
GROUP = "elderly"


def _fingerprints(folder):
    """Map every file under ``folder`` to (sha256, mtime_ns)."""
    return {
        path.relative_to(folder): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def _read_report(path):
    """Report rows keyed by input path."""
    with open(path, newline="", encoding="utf-8") as stream:
        return {row["input"]: row for row in csv.DictReader(stream)}


def _batch(count, seed=0):
    """A reproducible float32 batch in [-1, 1] at the tiny model's size."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (count, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """The tiny two-group generator, saved as .keras; returns (path, generator)."""
    keras.utils.set_random_seed(0)  # the same weights every run
    generator = tfcartoon.build_generator(GROUPS, ngf=8, image_size=SIZE)
    path = tmp_path_factory.mktemp("models") / "generator.keras"
    generator.save(path)
    return path, generator


@pytest.fixture(scope="module")
def elderly(generator_file):
    """``load_cartoonizer`` on the saved generator, group elderly (loaded once for the module)."""
    return inference.load_cartoonizer(generator_file[0], GROUP)


@pytest.fixture
def cached_model(generator_file, elderly, monkeypatch):
    """The CLI reuses the module's loaded model for (generator.keras, elderly); other requests load for real."""
    real = inference.load_cartoonizer

    def load(path=None, group=None, classifier=None):
        if path is not None and Path(path) == generator_file[0] and group == GROUP:
            return elderly
        return real(path, group, classifier)

    # cartoonize imports load_cartoonizer when it runs (so --help needs no TensorFlow)
    monkeypatch.setattr(inference, "load_cartoonizer", load)
    return generator_file[0]


@pytest.fixture
def photos(tmp_path):
    """A folder with two real face photos (one nested) and one of each kind of bad file."""
    female = require_shared("data", "raw_photos", "celeba_hq", "female")
    raw = tmp_path / "raw"
    (raw / "people" / "nested").mkdir(parents=True)
    shutil.copy(female / "015248.jpg", raw / "people" / "anna.jpg")
    shutil.copy(female / "030321.jpg", raw / "people" / "nested" / "bea.jpg")
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "notes.jpg").write_text("not a photo\n")
    (raw / "cut.jpg").write_bytes((female / "015248.jpg").read_bytes()[:3000])  # truncated JPEG
    Image.new("RGB", (200, 150), (70, 130, 180)).save(raw / "sky.png")
    Image.new("RGB", (10, 10), (0, 0, 0)).save(raw / "tiny.png")
    Image.new("1", (9000, 9000)).save(raw / "huge.png")  # 81 MP, refused from the header
    (raw / ".hidden.jpg").write_bytes(b"ignored")
    return raw


def _args(inputs, model, out, *extra):
    """Command line for the cached tiny model."""
    return [*map(str, inputs), "--model", str(model), "--group", GROUP, "-o", str(out), "--no-progress", *extra]


def test_mixed_folder_gives_one_cartoon_per_face_and_reports_the_rest(photos, cached_model, tmp_path, capsys):
    out = tmp_path / "out"
    before = _fingerprints(photos)
    assert cartoonize.main(_args([photos], cached_model, out, "--paste-back")) == 1
    stderr = capsys.readouterr().err
    rows = _read_report(out / cartoonize.REPORT_NAME)
    anna, bea = str(photos / "people" / "anna.jpg"), str(photos / "people" / "nested" / "bea.jpg")
    assert {Path(name).relative_to(photos).as_posix(): row["status"] for name, row in rows.items()} == {
        "empty.jpg": "unreadable", "notes.jpg": "unreadable", "cut.jpg": "unreadable", "tiny.png": "unreadable",
        "huge.png": "unreadable", "sky.png": "no_face", "people/anna.jpg": "ok", "people/nested/bea.jpg": "ok",
    }
    assert "decompression-bomb" in rows[str(photos / "huge.png")]["reason"]
    assert "truncated" in rows[str(photos / "cut.jpg")]["reason"]
    assert "minimum side" in rows[str(photos / "tiny.png")]["reason"]
    for name, stem in ((anna, "people/anna"), (bea, "people/nested/bea")):
        faces = int(rows[name]["faces"])
        cartoons = [f"{stem}_face{k}_cartoon.png" for k in range(faces)]
        assert faces >= 1 and rows[name]["written"] == ";".join([*cartoons, f"{stem}_cartoonized.jpg"])
        for cartoon in cartoons:
            assert read_image(out / cartoon).shape == (SIZE, SIZE, 3)
        assert read_image(out / f"{stem}_cartoonized.jpg").shape == read_image(name).shape
    for name, row in rows.items():
        if row["status"] != "ok":
            assert sum(line.startswith(f"{name}: {row['status']}: ") for line in stderr.splitlines()) == 1
    assert "cartoonize FAILED: 8 files, 2 ok, 6 failed (1 no_face, 5 unreadable)" in stderr
    assert "Traceback" not in stderr
    assert _fingerprints(photos) == before


def test_existing_outputs_are_kept_unless_overwrite(photos, cached_model, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.csv"
    inputs = [photos / "people" / "anna.jpg", photos / "people" / "nested"]
    assert cartoonize.main(_args(inputs, cached_model, out, "--size", "96", "--report", str(report))) == 0
    first = _fingerprints(out)
    assert sorted(p.as_posix() for p in first) == ["anna_face0_cartoon.png", "bea_face0_cartoon.png"]
    assert all(read_image(out / name).shape == (96, 96, 3) for name in first)

    assert cartoonize.main(_args(inputs, cached_model, out, "--report", str(report))) == 0
    assert [row["kept"] for row in _read_report(report).values()] == ["anna_face0_cartoon.png",
                                                                      "bea_face0_cartoon.png"]
    assert _fingerprints(out) == first
    assert "0 images written, 2 kept" in capsys.readouterr().err

    assert cartoonize.main(_args(inputs, cached_model, out, "--overwrite", "--report", str(report))) == 0
    assert read_image(out / "anna_face0_cartoon.png").shape == (SIZE, SIZE, 3)


def test_faceless_input_exits_1(tmp_path, cached_model, capsys):
    Image.new("RGB", (120, 90), (200, 40, 40)).save(tmp_path / "red.png")
    assert cartoonize.main(_args([tmp_path / "red.png"], cached_model, tmp_path / "out")) == 1
    assert "cartoonize FAILED: 1 files, 0 ok, 1 failed (1 no_face)" in capsys.readouterr().err


def test_unknown_group_fails_before_writing(photos, generator_file, tmp_path, capsys):
    before = _fingerprints(photos)
    argv = [str(photos), "--model", str(generator_file[0]), "--group", "pirates", "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        cartoonize.main(argv)
    assert info.value.code == 2
    assert "unknown group 'pirates'; its groups are ['young_women', 'elderly']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert _fingerprints(photos) == before


@pytest.mark.parametrize("case", ["missing model", "unknown model kind", "output inside input",
                                  "missing input", "bad report", "tiny size"])
def test_bad_arguments_exit_2_before_writing(case, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.new("RGB", (64, 64), (70, 130, 180)).save(raw / "sky.png")
    (tmp_path / "model.h5").write_bytes(b"weights")
    model, out, extra = tmp_path / "model.h5", tmp_path / "out", []
    if case == "missing model":
        model = tmp_path / "absent.keras"
    elif case == "output inside input":
        out = raw / "cartoons"
    elif case == "missing input":
        raw = tmp_path / "absent"
    elif case == "bad report":
        extra = ["--report", str(tmp_path / "report.txt")]
    elif case == "tiny size":
        extra = ["--size", "8"]
    with pytest.raises(SystemExit) as info:
        cartoonize.main([str(raw), "--model", str(model), "-o", str(out), *extra])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_command_runs_as_a_module(tmp_path):
    (tmp_path / "photos").mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "tfcartoon.cartoonize", str(tmp_path / "photos"), "--model",
                             str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert f"model {tmp_path / 'absent.onnx'}: no such file" in result.stderr


def test_output_stems_are_unique_across_inputs(tmp_path):
    for name in ("a/x.jpg", "a/x.png", "a/sub/y.jpg", "b/x.jpg", "y.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    inputs = [tmp_path / "a", tmp_path / "b", tmp_path / "y.jpg", tmp_path / "a" / "x.jpg"]
    stems = cartoonize.collect_inputs(inputs)
    assert {path.relative_to(tmp_path).as_posix(): stem.as_posix() for path, stem in stems.items()} == {
        "a/sub/y.jpg": "sub/y", "a/x.jpg": "x_jpg", "a/x.png": "x_png", "b/x.jpg": "x", "y.jpg": "y",
    }


def test_keras_generator_loads_with_its_group(generator_file, elderly):
    _, generator = generator_file
    assert (elderly.group, elderly.image_size) == (GROUP, SIZE)
    batch = _batch(3)
    expected = generator.group_model(GROUP)(batch).numpy()
    np.testing.assert_allclose(elderly(batch), expected, atol=1e-5)
    # Batch 1 against batch 3: oneDNN may pick other kernels per batch size (rounding
    # ~1e-5 measured, < 1e-4 everywhere), so this pair gets the wider tolerance.
    np.testing.assert_allclose(elderly(batch[:1]), expected[:1], atol=1e-4)


def test_keras_generator_without_group_lists_its_groups(generator_file):
    with pytest.raises(inference.ModelLoadError, match=r"groups \['young_women', 'elderly'\]; choose one"):
        inference.load_cartoonizer(generator_file[0])


def test_saved_group_model_loads_as_a_plain_model(generator_file, tmp_path):
    _, generator = generator_file
    generator.group_model(GROUP).save(tmp_path / "elderly.keras")
    plain = inference.load_cartoonizer(tmp_path / "elderly.keras")
    assert (plain.group, plain.image_size) == (None, SIZE)
    np.testing.assert_allclose(plain(_batch(2)), generator.group_model(GROUP)(_batch(2)).numpy(), atol=1e-5)


def _small_model():
    """A small plain image model (B, S, S, 3) -> (B, S, S, 3) in [-1, 1], quick to save and convert."""
    keras.utils.set_random_seed(1)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    return keras.Model(image, x)


def test_plain_keras_model_loads_without_group(tmp_path):
    model = _small_model()
    model.save(tmp_path / "small.keras")
    loaded = inference.load_cartoonizer(tmp_path / "small.keras", group="kids")
    assert (loaded.group, loaded.image_size) == ("kids", SIZE)
    np.testing.assert_allclose(loaded(_batch(2)), model(_batch(2)).numpy(), atol=1e-5)


def test_tflite_matches_keras(generator_file, tmp_path):
    model = generator_file[1].group_model(GROUP)
    spec = tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")
    model.export(str(tmp_path / "saved"), format="tf_saved_model", input_signature=[spec], verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    (tmp_path / f"{GROUP}_fp32.tflite").write_bytes(converter.convert())
    loaded = inference.load_cartoonizer(tmp_path / f"{GROUP}_fp32.tflite", GROUP)
    assert (loaded.group, loaded.image_size) == (GROUP, SIZE)
    batch = _batch(2)
    # XNNPACK and oneDNN sum in different orders: up to 1.2e-4 apart on random weights
    np.testing.assert_allclose(loaded(batch), model(batch).numpy(), atol=5e-4)


def test_uint8_tflite_takes_and_gives_pixels(tmp_path):
    model = _small_model()

    def app(pixels):
        cartoon = model(tf.cast(pixels, tf.float32) / 127.5 - 1.0)
        return tf.cast(tf.clip_by_value(tf.round((cartoon + 1.0) * 127.5), 0.0, 255.0), tf.uint8)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", app, input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.uint8)])
    archive.write_out(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    (tmp_path / "small_app.tflite").write_bytes(converter.convert())
    loaded = inference.load_cartoonizer(tmp_path / "small_app.tflite")
    pixels = np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
    cartoon = loaded(pixels.astype(np.float32) / 127.5 - 1.0)
    expected = cartoonize.to_pixels(model(pixels.astype(np.float32) / 127.5 - 1.0).numpy())
    assert np.abs(cartoonize.to_pixels(cartoon).astype(int) - expected).max() <= 1


def test_onnx_matches_keras(generator_file, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    tf2onnx = pytest.importorskip("tf2onnx")
    import tf2onnx.optimizer

    # tf2onnx's transpose optimizer takes minutes on this graph; the unoptimized model computes the same.
    monkeypatch.setattr(tf2onnx.optimizer, "_optimizers", {})
    model = generator_file[1].group_model(GROUP)
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="image")
    function = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    tf2onnx.convert.from_function(function, input_signature=[spec], opset=17,
                                  output_path=str(tmp_path / f"{GROUP}.onnx"))
    loaded = inference.load_cartoonizer(tmp_path / f"{GROUP}.onnx")
    assert (loaded.group, loaded.image_size) == (None, SIZE)
    batch = _batch(3)
    np.testing.assert_allclose(loaded(batch), model(batch).numpy(), atol=1e-4)


@pytest.mark.parametrize("name, content, expected", [
    ("absent.keras", None, "no such file or folder"),
    ("model.pt", b"weights", "unknown kind '.pt'"),
    ("broken.keras", b"not a zip", "cannot load as a Keras model"),
    ("broken.tflite", b"not a flatbuffer", "cannot load as a TFLite model"),
    ("broken.onnx", b"\x08\x01garbage", "cannot load as an ONNX model"),
    ("run", "folder", "folder without config.yaml"),
])
def test_load_errors_name_the_path_and_what_was_expected(tmp_path, name, content, expected):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(inference.ModelLoadError) as info:
        inference.load_cartoonizer(path)
    assert str(info.value).startswith(f"model {path}: ") and expected in str(info.value)


def test_run_directory_without_checkpoint_is_a_load_error(tmp_path):
    from tfcartoon.config import load_config

    (tmp_path / "config.yaml").write_text(load_config().to_yaml(), encoding="utf-8")
    with pytest.raises(inference.ModelLoadError, match="cannot load the run .*no checkpoint"):
        inference.load_cartoonizer(tmp_path, GROUP)


def test_a_run_draws_its_trained_branches_and_warns_about_the_others(base_run, elderly_run,
                                                                      caplog):
    from tfcartoon.training.run import load

    run = load(base_run)
    base = run.photo2cartoon
    batch = np.random.default_rng(0).uniform(
        -1, 1, (2, base.image_size, base.image_size, 3)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        plain = inference.load_cartoonizer(base_run)
    assert plain.group == "young_women" and not caplog.records
    with caplog.at_level(logging.WARNING):
        asked = inference.load_cartoonizer(base_run, "elderly")
    assert any("only the young_women branch" in r.getMessage() for r in caplog.records)
    expected = base.group_model("young_women")(batch).numpy()
    np.testing.assert_allclose(asked(batch), expected, atol=1e-5)  # like evaluate
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        inference.load_cartoonizer(elderly_run, "elderly")
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        inference.load_cartoonizer(elderly_run, "kids")
    assert any("kids branch was not trained" in r.getMessage() for r in caplog.records)
    with pytest.raises(inference.ModelLoadError, match="unknown group 'pirates'"):
        inference.load_cartoonizer(base_run, "pirates")
