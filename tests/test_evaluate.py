"""The evaluation command on a smoke-trained run, and its metrics on known inputs."""

import json

import numpy as np
import pytest
import yaml

from tfcartoon import evaluate
from tests.helpers import GROUPS, make_dataset

METRICS = ("identity", "l1", "psnr", "ssim", "group_agreement", "group_agreement_real", "kid")


def _kid_by_hand(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out with loops."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_formula_and_separates_distributions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    assert evaluate.kid(x, y) == pytest.approx(_kid_by_hand(x, y), rel=1e-10)
    same = rng.normal(size=(400, 8))
    other = rng.normal(size=(400, 8))
    shifted = rng.normal(loc=1.0, size=(400, 8))
    assert abs(evaluate.kid(same, other)) < 0.05 * evaluate.kid(same, shifted)


def test_kid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 2 samples"):
        evaluate.kid(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        evaluate.kid(np.zeros((3, 3)), np.zeros((4, 2)))


def test_paired_scores_of_identical_and_shifted_images():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    same = evaluate.paired_scores(a, a)
    np.testing.assert_allclose(same["l1"], 0.0)
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-5)
    shifted = np.clip(a + 0.2, -1, 1)  # 0.1 on the [0, 1] scale where not clipped
    scores = evaluate.paired_scores(shifted, a)
    expected_l1 = np.abs((shifted - a) / 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(scores["l1"], expected_l1, rtol=1e-5)
    mse = (((shifted - a) / 2) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(scores["psnr"], -10 * np.log10(mse), rtol=1e-4)


def test_grid_rows_are_photo_cartoon_reference():
    photo = np.full((1, 4, 4, 3), -1.0, np.float32)
    cartoon = np.full((1, 4, 4, 3), 1.0, np.float32)
    image = evaluate.grid(photo, cartoon, [None])
    assert image.shape == (4, 12, 3) and image.dtype == np.uint8
    assert image[:, :4].max() == 0 and image[:, 4:8].min() == 255
    assert (image[:, 8:] == 128).all()  # no reference: mid grey


@pytest.fixture(scope="module")
def report(elderly_run, data_dir, face_id_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, evaluate.evaluate(elderly_run, data_dir, out, face_id_model=face_id_file)


def test_evaluate_writes_every_metric_for_every_group(report):
    out, result = report
    assert list(result["groups"]) == GROUPS
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["groups"].keys() == result["groups"].keys()
    for group, entry in result["groups"].items():
        assert entry["branch"] == group
        assert entry["pairs"] == entry["photos"] > 0
        for metric in METRICS:
            assert entry[metric] is not None and np.isfinite(entry[metric]), (group, metric)
        assert -1.0 <= entry["identity"] <= 1.0
        assert 0.0 <= entry["group_agreement"] <= 1.0
        assert len(entry["per_image"]) == entry["photos"]
        grid = (out / "grids" / f"{group}.png")
        assert grid.is_file()
    table = (out / "report.md").read_text()
    for group in GROUPS:
        assert f"| {group} | {group} |" in table


def test_grid_holds_one_row_per_photo(report, elderly_run):
    from tfcartoon.data.images import read_image

    out, result = report
    size = result["image_size"]
    image = read_image(out / "grids" / "elderly.png")
    assert image.shape == (size * result["groups"]["elderly"]["photos"], 3 * size, 3)


def test_a_base_stage_run_uses_its_base_branch_everywhere(base_run, data_dir, face_id_file,
                                                         tmp_path):
    result = evaluate.evaluate(base_run, data_dir, tmp_path / "r", groups=["kids"],
                               face_id_model=face_id_file)
    assert result["groups"]["kids"]["branch"] == "young_women"
    assert "base-stage run" in result["branches"]


def test_report_folder_is_not_overwritten(report, elderly_run, data_dir, face_id_file):
    out, _ = report
    before = (out / "report.json").read_bytes()
    with pytest.raises(evaluate.EvaluationError, match="--overwrite"):
        evaluate.evaluate(elderly_run, data_dir, out, face_id_model=face_id_file)
    assert (out / "report.json").read_bytes() == before


def test_bad_inputs_are_named(elderly_run, face_id_file, tmp_path):
    data = make_dataset(tmp_path / "data", count=2)
    with pytest.raises(evaluate.EvaluationError, match="not in the run's groups"):
        evaluate.evaluate(elderly_run, data, tmp_path / "a", groups=["pensioners"],
                          face_id_model=face_id_file)
    with pytest.raises(evaluate.EvaluationError, match="--branch 'nobody'"):
        evaluate.evaluate(elderly_run, data, tmp_path / "b", branch="nobody",
                          face_id_model=face_id_file)
    with pytest.raises(evaluate.EvaluationError, match="is not a run directory"):
        evaluate.evaluate(tmp_path, data, tmp_path / "c",
                          face_id_model=face_id_file)
    empty = tmp_path / "empty"
    (empty / "kids").mkdir(parents=True)
    with pytest.raises(evaluate.EvaluationError, match="kids/val/photos"):
        evaluate.evaluate(elderly_run, empty, tmp_path / "d", groups=["kids"],
                          face_id_model=face_id_file)


def test_unreadable_val_images_are_reported_and_skipped(elderly_run, face_id_file, tmp_path):
    data = make_dataset(tmp_path / "data", groups=["kids"], count=2)
    (data / "kids" / "val" / "photos" / "broken.jpg").write_bytes(b"not an image")
    result = evaluate.evaluate(elderly_run, data, tmp_path / "r", groups=["kids"],
                               face_id_model=face_id_file)
    entry = result["groups"]["kids"]
    assert entry["photos"] == 2
    assert any("broken.jpg" in item for item in entry["skipped"])
    assert "broken.jpg" in (tmp_path / "r" / "report.md").read_text()


def test_cli_writes_the_report_and_exits_2_on_bad_input(elderly_run, data_dir, face_id_file,
                                                       tmp_path, capsys):
    assert evaluate.main(["--model", str(elderly_run), "--data", str(data_dir),
                          "--out", str(tmp_path / "r"), "--groups", "elderly",
                          "--face-id", str(face_id_file)]) == 0
    assert "| elderly | elderly |" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "r" / "report.json").read_text())
    assert list(saved["groups"]) == ["elderly"]
    assert evaluate.main(["--model", str(tmp_path / "missing"), "--data", str(data_dir),
                          "--out", str(tmp_path / "s")]) == 2
    assert "--model" in capsys.readouterr().err
