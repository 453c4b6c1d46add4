"""Face-ID embedder: TFLite -> Keras conversion, the differentiable crop, the metric."""

import itertools
from pathlib import Path

import flatbuffers
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.lite.python import schema_py_generated as tflite_schema

from tests.helpers import require_shared
from tfcartoon import metrics
from tfcartoon.models import face_id, tflite_to_keras
from tfcartoon.paths import ENV_VAR

MODEL = face_id.DEFAULT_EMBEDDER
PHOTOS = ("data", "p2c", "train", "photos")


def _read_images(paths, size=None):
    """RGB images as float32 (N, S, S, 3) in [-1, 1]."""
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if size is not None:
            image = image.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(image, np.float32) / 127.5 - 1.0)
    return np.stack(images)


def _unit(x):
    """Rows of ``x`` scaled to unit L2 norm."""
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _run_tflite(path, inputs):
    """Outputs of the TFLite interpreter on ``inputs``, one sample at a time."""
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in inputs:
        interpreter.set_tensor(input_index, sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(outputs)


@pytest.fixture(scope="module")
def model_path():
    return require_shared(*MODEL)


@pytest.fixture(scope="module")
def embedder(model_path):
    return face_id.load_face_embedder(model_path)


@pytest.fixture(scope="module")
def faces():
    """Six aligned 256x256 p2c photos in [-1, 1]."""
    folder = require_shared(*PHOTOS)
    return _read_images(sorted(folder.glob("*.jpg"))[:6])


def test_keras_matches_tflite_on_aligned_faces(model_path, embedder, faces):
    inputs = np.asarray(face_id.embedder_input(faces))
    assert inputs.shape == (6, 112, 112, 3)

    reference = _run_tflite(model_path, inputs)
    ours = np.asarray(embedder(inputs))

    assert ours.shape == (6, 128)
    assert np.abs(_unit(ours) - _unit(reference)).max() <= 1e-5
    assert embedder.trainable_weights == []
    assert {layer.dtype_policy.name for layer in embedder.layers} == {"float32"}


def test_embedder_stays_float32_under_mixed_precision(model_path, faces):
    keras.config.set_dtype_policy("mixed_float16")
    model = face_id.load_face_embedder(model_path)
    embedding = face_id.face_embedding(model, faces[:1])
    assert embedding.dtype == "float32"


def test_keras_file_roundtrip_via_command_line(model_path, embedder, tmp_path):
    out = tmp_path / "face_id.keras"
    face_id.main([str(model_path), str(out)])

    reloaded = face_id.load_face_embedder(out)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(embedder(x)))
    assert reloaded.trainable_weights == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_id.keras"]


def test_convert_refuses_to_overwrite(model_path, tmp_path):
    out = tmp_path / "face_id.keras"
    out.write_bytes(b"keep me")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        face_id.convert_face_embedder(model_path, out)
    with pytest.raises(SystemExit) as exit_info:
        face_id.main([str(model_path), str(out)])
    assert exit_info.value.code == 2
    assert out.read_bytes() == b"keep me"

    face_id.convert_face_embedder(model_path, out, overwrite=True)
    assert face_id.load_face_embedder(out).output_shape == (None, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_id.keras"]


def test_convert_failure_leaves_no_partial_file(model_path, tmp_path, monkeypatch):
    def broken_save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        face_id.convert_face_embedder(model_path, tmp_path / "face_id.keras")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_op_is_named(model_path, tmp_path):
    model = tflite_schema.ModelT.InitFromPackedBuf(model_path.read_bytes(), 0)
    CONCATENATION = tflite_schema.BuiltinOperator.CONCATENATION
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == CONCATENATION:
            code.builtinCode = tflite_schema.BuiltinOperator.SIN
            code.deprecatedBuiltinCode = tflite_schema.BuiltinOperator.SIN
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    patched = tmp_path / "patched.tflite"
    patched.write_bytes(builder.Output())

    with pytest.raises(NotImplementedError, match=r"unsupported TFLite op\(s\) SIN"):
        tflite_to_keras.tflite_to_keras(patched)


def test_bad_files_are_rejected(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        face_id.load_face_embedder(junk)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        face_id.load_face_embedder(tmp_path / "missing.tflite")
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.tflite or \.keras"):
        face_id.load_face_embedder(other)
    with pytest.raises(ValueError, match=r"must end in \.keras"):
        face_id.convert_face_embedder(junk, tmp_path / "out.h5")


def _small_graph_with_other_ops():
    """A small Keras model whose TFLite conversion uses the ops the face model lacks."""
    x = keras.Input((12, 12, 3), batch_size=1)
    a = keras.layers.ZeroPadding2D(((1, 2), (2, 1)))(x)
    a = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, strides=2, padding="same", activation="relu6"
    )(a)
    a = keras.layers.AveragePooling2D(3, strides=2, padding="same")(a)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="tanh")(x)
    b = keras.layers.MaxPooling2D(3)(b)
    c = keras.layers.Activation("sigmoid")(keras.layers.Multiply()([a, b]) + a)
    c = keras.layers.Reshape((16, 12))(keras.layers.Concatenate()([c, b]))
    c = keras.layers.ReLU()(c)
    d = keras.layers.Dense(5)(keras.layers.Flatten()(c))
    d = keras.ops.mean(keras.layers.Reshape((5, 1))(d), axis=2) + np.float32(0.1)
    return keras.Model(x, d)


def test_converter_handles_other_op_kinds(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "small.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(_small_graph_with_other_ops()).convert())
    flat, _ = tflite_to_keras._read_flatbuffer(path)
    kinds = {tflite_to_keras._op_kind(flat, op) for op in flat.subgraphs[0].operators}
    assert {"AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D", "PAD", "RESHAPE", "LOGISTIC", "RELU"} <= kinds

    model = tflite_to_keras.tflite_to_keras(path)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32)
    reference = _run_tflite(path, x)
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(np.asarray(model(x)), reference, atol=1e-5)


def test_face_embedding_gradient_reaches_the_face_only(embedder):
    images = tf.Variable(np.random.default_rng(2).uniform(-1, 1, (2, 256, 256, 3)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        a, b = tf.unstack(tf.math.l2_normalize(face_id.face_embedding(embedder, images), axis=1))
        loss = 1.0 - tf.reduce_sum(a * b)
    grad = tape.gradient(loss, images).numpy()

    top, left, side = face_id.face_crop_box(256)
    inside = grad[:, top : top + side, left : left + side]
    assert np.isfinite(grad).all()
    assert np.abs(inside).max() > 0
    assert np.abs(grad).sum() == pytest.approx(np.abs(inside).sum())


def test_face_crop_scales_with_image_size(embedder):
    assert face_id.face_crop_box(256) == face_id.FACE_CROP_BOX
    assert face_id.face_crop_box(128) == (16, 16, 96)
    x = np.zeros((1, 128, 128, 3), np.float32)
    assert face_id.face_embedding(embedder, x).shape == (1, 128)
    with pytest.raises(ValueError, match=r"images: expected shape \(batch, S, S, 3\)"):
        face_id.embedder_input(np.zeros((1, 128, 96, 3), np.float32))


def test_identity_similarity(embedder, faces):
    same = metrics.identity_similarity(faces[:3], faces[:3], embedder=embedder)
    assert same.shape == (3,)
    np.testing.assert_allclose(same, 1.0, atol=1e-5)

    swapped = metrics.identity_similarity(faces[:3], faces[2::-1], embedder=embedder)
    assert swapped[1] == pytest.approx(1.0, abs=1e-5)
    assert max(swapped[0], swapped[2]) < 0.9


def test_identity_similarity_default_embedder(faces, model_path):
    metrics._default_embedder.cache_clear()
    try:
        similarity = metrics.identity_similarity(faces[:2], faces[:2])
    finally:
        metrics._default_embedder.cache_clear()
    np.testing.assert_allclose(similarity, 1.0, atol=1e-5)


def test_identity_similarity_without_shared_embedder(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    metrics._default_embedder.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="pass an embedder"):
            metrics.identity_similarity(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
    finally:
        metrics._default_embedder.cache_clear()


@pytest.mark.parametrize(
    "photos, cartoons, message",
    [
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 8, 3)), r"photos: expected aligned crops"),
        (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 6, 3)), r"cartoons: expected aligned crops"),
        (np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8, 3)), r"2 photos and 3 cartoons"),
        (np.full((1, 8, 8, 3), 255.0), np.zeros((1, 8, 8, 3)), r"photos: expected values"),
    ],
)
def test_identity_similarity_rejects_bad_inputs(photos, cartoons, message):
    with pytest.raises(ValueError, match=message):
        metrics.identity_similarity(photos, cartoons, embedder=object())


def test_same_person_scores_higher_on_lotr(embedder):
    """ROC AUC >= 0.95 for same vs different people, through the project's aligner."""
    faces_module = pytest.importorskip(
        "tfcartoon.data.faces",
        reason="tfcartoon.data.faces (the MTCNN alignment pipeline) is not available yet",
    )
    folder = require_shared("data", "raw_photos", "lotr")
    paths = sorted(folder.glob("*.jpg"))
    detector = faces_module.FaceDetector()
    crops = []
    for path in paths:
        photo = np.asarray(Image.open(path).convert("RGB"))
        found = detector.detect(photo)
        assert found, f"no face detected in {path.name}"
        crops.append(faces_module.align_face(photo, found[0]).image)
    images = np.stack(crops).astype(np.float32) / 127.5 - 1.0
    people = [p.stem.split("__")[1] for p in paths]

    unit = _unit(face_id.face_embedding(embedder, images))
    pairs = list(itertools.combinations(range(len(paths)), 2))
    same = np.array([unit[i] @ unit[j] for i, j in pairs if people[i] == people[j]])
    different = np.array([unit[i] @ unit[j] for i, j in pairs if people[i] != people[j]])
    auc = (same[:, None] > different[None]).mean() + 0.5 * (same[:, None] == different[None]).mean()
    assert len(same) == 11 and len(different) == 220
    assert auc >= 0.95, f"ROC AUC {auc:.3f}"
