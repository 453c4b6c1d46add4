"""Automatic group routing: the group classifier, ``group="auto"`` and the auto exports.

Synthetic faces make the groups trivially separable (reddish young_women, bluish
elderly) so that a classifier trained for a few seconds routes them without doubt;
the last test routes real faces of different groups in one photo (../shared).
"""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from export import common, to_onnx, to_tflite
from tests.helpers import SMOKE, require_shared
from tfcartoon import build_generator
from tfcartoon.classifier import (
    ClassifierError,
    GroupClassifier,
    load_group_classifier,
    main as classifier_main,
    routes_from_probabilities,
)
from tfcartoon.inference import ModelLoadError, RoutedCartoonizer, load_cartoonizer
from tfcartoon.models.group_classifier import route_index

GROUPS = ["young_women", "elderly"]
TINT = {"young_women": (200, 70, 60), "elderly": (60, 80, 200)}
SIZE = 64


def tinted_faces(tint, count, seed):
    """``count`` uint8 (SIZE, SIZE, 3) images: a ``tint`` with smooth random shading."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        shade = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
                           .resize((SIZE, SIZE), Image.BILINEAR), np.float32)
        images.append(np.clip(0.7 * np.array(tint) + 0.3 * shade, 0, 255).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def tinted_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinted")
    for seed, group in enumerate(GROUPS):
        for folder, count in (("photos", 12), ("val/photos", 4)):
            path = root / group / folder
            path.mkdir(parents=True)
            for index, image in enumerate(tinted_faces(TINT[group], count, seed * 10 + len(folder))):
                Image.fromarray(image).save(path / f"{index:02d}.png")
        (root / group / "cartoons").mkdir()
    (root / "young_women" / "photos" / "broken.jpg").write_bytes(b"not an image")
    return root


SETTINGS = ["groups=[young_women, elderly]", f"model.image_size={SIZE}", "routing.input_size=16",
            "routing.width=8", "routing.epochs=25", "routing.batch_size=8", "routing.lr=0.01"]


def train_cli(data, out, *extra):
    args = ["--config", str(SMOKE), "--data", str(data), "--out", str(out)]
    for setting in SETTINGS:
        args += ["--set", setting]
    return classifier_main(args + list(extra))


@pytest.fixture(scope="module")
def classifier_file(tinted_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "group_classifier.keras"
    assert train_cli(tinted_data, out) == 0
    return out


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """A tiny two-group generator whose branches differ (independently initialised)."""
    path = tmp_path_factory.mktemp("generator") / "two.keras"
    keras.utils.set_random_seed(1)
    build_generator(GROUPS, ngf=8, image_size=SIZE, hourglass_depth=1).save(path)
    return path


def faces_batch():
    """Float faces in [-1, 1]: young_women, elderly, young_women (unseen shading)."""
    images = (tinted_faces(TINT["young_women"], 1, 100) + tinted_faces(TINT["elderly"], 1, 101)
              + tinted_faces(TINT["young_women"], 1, 102))
    return np.stack(images).astype(np.float32) / 127.5 - 1.0


def test_routing_rule_falls_back_to_the_base_group_below_the_threshold():
    probabilities = np.array([[0.1, 0.9], [0.45, 0.55], [0.7, 0.3], [0.58, 0.42]], np.float32)
    index, confidence, fallback = route_index(probabilities, threshold=0.6)
    assert index.tolist() == [1, 0, 0, 0]
    assert fallback.tolist() == [False, True, False, False]
    np.testing.assert_allclose(confidence, [0.9, 0.55, 0.7, 0.58])
    routes = routes_from_probabilities(probabilities, GROUPS, 0.6)
    assert [r.label() for r in routes] == [
        "elderly:0.90", "young_women:0.55(fallback from elderly)", "young_women:0.70",
        "young_women:0.58"]


def test_classifier_cli_trains_reports_and_keeps_an_existing_file(classifier_file, tinted_data,
                                                                   capsys):
    card = json.loads(classifier_file.with_suffix(".json").read_text())
    assert card["groups"] == GROUPS and card["threshold"] == 0.5
    assert card["trained_on"] == {"young_women": 12, "elderly": 12}
    assert card["evaluated_on"] == {"young_women": 4, "elderly": 4}
    assert card["evaluation_photos"] == "val/photos"
    assert card["evaluation"]["accuracy"] == 1.0
    assert card["evaluation"]["confusion"]["counts"] == [[4, 0], [0, 4]]
    assert [p.endswith("broken.jpg") for p in card["skipped_unreadable"]] == [True]
    before = classifier_file.read_bytes()
    assert train_cli(tinted_data, classifier_file) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert classifier_file.read_bytes() == before


def test_classifier_settings_are_checked_against_the_model(tinted_data, tmp_path, capsys):
    out = tmp_path / "c.keras"
    assert train_cli(tinted_data, out, "--set", "routing.input_size=48") == 2
    assert "routing.input_size (48) must divide model.image_size (64)" in capsys.readouterr().err
    assert not out.exists()


def test_one_set_of_weights_reads_faces_of_any_multiple_of_its_size(classifier_file):
    small = load_group_classifier(classifier_file)
    large = load_group_classifier(classifier_file, GROUPS, image_size=SIZE)
    assert (small.image_size, large.image_size) == (16, SIZE)
    faces = faces_batch()
    pooled = faces.reshape(3, 16, 4, 16, 4, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(large.probabilities(faces), small.probabilities(pooled), atol=1e-5)
    with pytest.raises(ClassifierError, match=r"knows the groups .* retrain it"):
        load_group_classifier(classifier_file, ["young_women", "kids"])
    with pytest.raises(ClassifierError, match="multiple of 16"):
        load_group_classifier(classifier_file, GROUPS, image_size=40)


def test_auto_routes_each_face_to_its_groups_branch(generator_file, classifier_file):
    cartoonizer = load_cartoonizer(generator_file, "auto", classifier=classifier_file)
    assert isinstance(cartoonizer, RoutedCartoonizer) and cartoonizer.group == "auto"
    faces = faces_batch()
    cartoons, routes = cartoonizer.routed(faces)
    assert [r.group for r in routes] == ["young_women", "elderly", "young_women"]
    assert not any(r.fallback for r in routes) and min(r.probability for r in routes) > 0.5
    generator = keras.models.load_model(generator_file, compile=False)
    for face, cartoon, route in zip(faces, cartoons, routes):
        expected = generator.group_model(route.group)(face[None], training=False)
        np.testing.assert_allclose(cartoon, expected[0], atol=1e-5)
    other = generator.group_model("young_women")(faces[1:2], training=False)
    assert np.abs(cartoons[1] - other[0]).mean() > 1e-3  # the branches differ
    np.testing.assert_array_equal(cartoonizer(faces), cartoons)


def test_auto_needs_a_classifier_that_fits(generator_file, classifier_file):
    with pytest.raises(ModelLoadError, match="needs a group classifier"):
        load_cartoonizer(generator_file, "auto")
    with pytest.raises(ModelLoadError, match="only with group 'auto'"):
        load_cartoonizer(generator_file, "elderly", classifier=classifier_file)
    with pytest.raises(ModelLoadError, match="preset holds the young_women branch only"):
        load_cartoonizer(None, "auto")


def test_a_run_that_never_routes_keeps_any_image_size():
    from tfcartoon.config import load_config

    config = load_config(SMOKE, ["model.image_size=96", "data.resize=104"])
    assert config.model.image_size % config.routing.input_size  # 96 is not a multiple of 64


def test_auto_is_a_reserved_group_name():
    from tfcartoon.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'auto' is reserved"):
        load_config(SMOKE, ["groups=[young_women, auto]"])


@pytest.fixture(scope="module")
def generator_and_classifier(generator_file, classifier_file):
    generator = common.load_generator(generator_file)
    return generator, common.load_classifier_for(generator, classifier_file)


def parity_faces():
    faces = (tinted_faces(TINT["young_women"], 2, 200) + tinted_faces(TINT["elderly"], 2, 201))
    return np.stack(faces), "tinted test faces"


def test_auto_tflite_holds_every_group_and_routes_like_keras(generator_and_classifier,
                                                            generator_file, classifier_file,
                                                            tmp_path):
    generator, classifier = generator_and_classifier
    path, card = to_tflite.export_tflite(generator, generator_file, tmp_path, classifier=classifier,
                                         parity=parity_faces())
    assert path.name == "auto_fp32.tflite"
    assert [i["name"] for i in card["inputs"]] == ["photo"]
    assert [o["name"] for o in card["outputs"]] == ["cartoon", "group_probabilities"]
    assert card["routing"]["threshold"] == 0.5
    assert card["routing"]["parity"]["same_group_as_keras"] == 4
    assert card["routing"]["parity"]["groups_picked"] == {"young_women": 2, "elderly": 2}
    exported = load_cartoonizer(path, "auto")
    keras_routed = load_cartoonizer(generator_file, "auto", classifier=classifier_file)
    faces = faces_batch()
    cartoons, routes = exported.routed(faces)
    expected, expected_routes = keras_routed.routed(faces)
    assert [r.group for r in routes] == [r.group for r in expected_routes]
    np.testing.assert_allclose(cartoons, expected, atol=2e-3)
    assert load_cartoonizer(path).group == "auto"
    with pytest.raises(ModelLoadError, match="picks each face's group itself"):
        load_cartoonizer(path, "elderly")


def test_auto_tflite_falls_back_in_the_graph(generator_and_classifier, generator_file, tmp_path):
    generator, classifier = generator_and_classifier
    # above any probability: every face falls back (a config allows at most 1.0)
    unsure = GroupClassifier(classifier.model, classifier.groups, 1.01, classifier.card,
                             classifier.source)
    photos, source = parity_faces()
    path, card = to_tflite.export_tflite(generator, generator_file, tmp_path, classifier=unsure,
                                         parity=(photos, source))
    assert card["routing"]["parity"]["groups_picked"] == {"young_women": 4}
    _, routes = load_cartoonizer(path).routed(common.photos_to_float(photos))
    assert [r.group for r in routes] == ["young_women"] * 4
    assert [r.predicted for r in routes] == ["young_women"] * 2 + ["elderly"] * 2
    assert [r.fallback for r in routes] == [False, False, True, True]


def test_auto_onnx_routes_like_keras(generator_and_classifier, generator_file, classifier_file,
                                     tmp_path):
    generator, classifier = generator_and_classifier
    path, card = to_onnx.export_onnx_auto(generator, generator_file, tmp_path, classifier,
                                          quick=True, parity=parity_faces())
    assert "If" in card["ops"]
    exported = load_cartoonizer(path, "auto")
    faces = faces_batch()
    cartoons, routes = exported.routed(faces)
    expected, expected_routes = load_cartoonizer(
        generator_file, "auto", classifier=classifier_file).routed(faces)
    assert [r.group for r in routes] == [r.group for r in expected_routes]
    np.testing.assert_allclose(cartoons, expected, atol=2e-3)


def test_export_clis_check_auto_options(generator_file, classifier_file, tmp_path, capsys):
    assert to_tflite.main(["--model", str(generator_file), "--auto", "--out", str(tmp_path)]) == 2
    assert "--auto needs a group classifier" in capsys.readouterr().err
    assert to_tflite.main(["--model", str(generator_file), "--classifier", str(classifier_file),
                           "--out", str(tmp_path)]) == 2
    assert "used only by the auto variant" in capsys.readouterr().err
    assert to_onnx.main(["--model", str(generator_file), "--auto", "--classifier",
                         str(classifier_file), "--batch", "any", "--out", str(tmp_path)]) == 2
    assert "batch 1" in capsys.readouterr().err
    assert to_tflite.main(["--model", str(generator_file), "--auto", "--multigroup",
                           "--classifier", str(classifier_file), "--out", str(tmp_path)]) == 2
    assert "drop --multigroup" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cartoonize_auto_draws_each_face_of_one_photo_with_its_groups_branch(
        tmp_path, generator_file, classifier_file):
    """Real faces of two groups in one photo, each tinted the way the test classifier
    tells its groups apart (so that the test shows routing, not the classifier's
    accuracy, which BENCHMARKS.md reports): two faces, two branches, each face's cartoon
    its group's path on that face."""
    import cv2

    from tfcartoon import cartoonize
    from tfcartoon.data import faces

    fourgroups = require_shared("data", "fourgroups")
    canvas = Image.new("RGB", (660, 380), (128, 128, 128))
    for k, group in enumerate(GROUPS):
        face = sorted((fourgroups / group / "photos").glob("*.jpg"))[0]
        pixels = np.asarray(Image.open(face).convert("RGB").resize((240, 240)), np.float32)
        tinted = pixels * (np.array(TINT[group]) / 255.0) + 30.0
        canvas.paste(Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8)), (60 + 300 * k, 70))
    photo = tmp_path / "photos" / "two.jpg"
    photo.parent.mkdir()
    canvas.save(photo, quality=95)
    out = tmp_path / "out"
    status = cartoonize.main([str(photo), "--model", str(generator_file), "--group", "auto",
                              "--classifier", str(classifier_file), "-o", str(out),
                              "--report", str(tmp_path / "report.json")])
    assert status == 0
    (row,) = json.loads((tmp_path / "report.json").read_text())
    labels = row["groups"].split(";")
    assert row["faces"] == 2 and len(labels) == 2
    drawn = [label.split(":")[0] for label in labels]
    assert sorted(drawn) == sorted(GROUPS), labels  # two faces, two branches

    generator = keras.models.load_model(generator_file, compile=False)
    image = np.asarray(Image.open(photo).convert("RGB"))
    found = faces.FaceDetector().detect(image)
    for k, (face, group) in enumerate(zip(found, drawn)):
        column = int((face.landmarks[:, 0].mean() - 60) // 300)
        assert GROUPS[column] == group, (k, labels)  # each face drawn by its own group
        crop = faces.align_face(image, face, size=SIZE).image
        expected = generator.group_model(group)(crop[None].astype(np.float32) / 127.5 - 1.0)
        expected = np.clip(np.rint((np.asarray(expected[0]) + 1.0) * 127.5), 0, 255)
        written = cv2.cvtColor(cv2.imread(str(out / f"two_face{k}_cartoon.png")),
                               cv2.COLOR_BGR2RGB)
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
