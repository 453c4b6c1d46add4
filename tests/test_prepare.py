"""The dataset preparation command, python -m tfcartoon.prepare."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import require_shared
from tfcartoon import prepare
from tfcartoon.data.images import read_image

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def plain_dir(tmp_path):
    """A folder with one (faceless) image, for the argument checks that need no real photo."""
    raw = tmp_path / "plain"
    (raw / "people").mkdir(parents=True)
    Image.new("RGB", (64, 64), (70, 130, 180)).save(raw / "people" / "sky.png")
    return raw


@pytest.fixture
def raw_dir(tmp_path):
    """A folder of two real photos (one nested) and one of each kind of bad file."""
    celeba = require_shared("data", "raw_photos", "celeba_hq")
    raw = tmp_path / "raw"
    (raw / "people" / "nested").mkdir(parents=True)
    shutil.copy(celeba / "female" / "015248.jpg", raw / "people" / "anna.jpg")
    shutil.copy(celeba / "male" / "005735.jpg", raw / "people" / "nested" / "bob.jpg")
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "notes.jpg").write_text("not a photo\n")
    (raw / "readme.txt").write_text("anything else is tried too\n")
    Image.new("RGB", (200, 150), (70, 130, 180)).save(raw / "sky.png")
    Image.new("RGB", (10, 10), (0, 0, 0)).save(raw / "tiny.png")
    (raw / ".hidden.jpg").write_bytes(b"ignored")
    return raw


def test_prepare_mixed_folder(raw_dir, tmp_path, capsys):
    out = tmp_path / "out"
    before = _fingerprints(raw_dir)
    status = prepare.main([str(raw_dir), str(out), "--no-progress"])
    assert status == 1
    stderr = capsys.readouterr().err
    rows = _read_report(out / prepare.REPORT_NAME)
    assert sorted(rows) == ["empty.jpg", "notes.jpg", "people/anna.jpg", "people/nested/bob.jpg",
                            "readme.txt", "sky.png", "tiny.png"]
    assert {name: row["status"] for name, row in rows.items()} == {
        "empty.jpg": "unreadable", "notes.jpg": "unreadable", "readme.txt": "unreadable",
        "tiny.png": "unreadable", "sky.png": "no_face",
        "people/anna.jpg": "ok", "people/nested/bob.jpg": "ok",
    }
    assert "empty" in rows["empty.jpg"]["reason"] and "minimum side" in rows["tiny.png"]["reason"]
    assert rows["people/anna.jpg"]["written"] == "people/anna_face0.jpg"
    for name in ("people/anna_face0.jpg", "people/nested/bob_face0.jpg"):
        assert read_image(out / name).shape == (256, 256, 3)
    for name, row in rows.items():
        if row["status"] != "ok":
            assert sum(f"{name}: {row['status']}: " in line for line in stderr.splitlines()) == 1
    assert "prepare FAILED: 7 files, 2 ok, 5 failed (1 no_face, 4 unreadable); 2 crops written" in stderr
    assert _fingerprints(raw_dir) == before


def test_prepare_keeps_existing_outputs_unless_overwrite(raw_dir, tmp_path, capsys):
    out = tmp_path / "out"
    good = tmp_path / "good"
    shutil.copytree(raw_dir / "people", good)
    assert prepare.main([str(good), str(out), "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    first = _fingerprints(out)
    assert sorted(str(p) for p in first) == ["anna_face0.jpg", "nested/bob_face0.jpg"]

    assert prepare.main([str(good), str(out), "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(row["written"], row["kept"]) for row in rows] == [("", "anna_face0.jpg"), ("", "nested/bob_face0.jpg")]
    assert _fingerprints(out) == first
    assert "0 crops written, 2 kept" in capsys.readouterr().err

    assert prepare.main([str(good), str(out), "--no-progress", "--overwrite", "--size", "128",
                         "--report", str(tmp_path / "r.json")]) == 0
    assert read_image(out / "anna_face0.jpg").shape == (128, 128, 3)


@pytest.mark.parametrize("inside", [".", "crops", "people/crops"])
def test_prepare_refuses_output_inside_input(plain_dir, inside, capsys):
    before = _fingerprints(plain_dir)
    with pytest.raises(SystemExit) as info:
        prepare.main([str(plain_dir), str(plain_dir / inside)])
    assert info.value.code == 2
    assert "inside" in capsys.readouterr().err
    assert _fingerprints(plain_dir) == before


def test_prepare_refuses_bad_arguments(plain_dir, tmp_path, capsys):
    for argv in ([str(tmp_path / "absent"), str(tmp_path / "out")],
                 [str(plain_dir), str(tmp_path / "out"), "--report", str(tmp_path / "r.txt")],
                 [str(plain_dir), str(tmp_path / "out"), "--report", str(plain_dir / "r.csv")],
                 [str(plain_dir), str(tmp_path / "out"), "--min-face", "4"],
                 [str(plain_dir), str(tmp_path / "out"), "--segment-model", str(tmp_path / "none.tflite")]):
        with pytest.raises(SystemExit) as info:
            prepare.main(argv)
        assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_faceless_folder_fails_with_a_summary(plain_dir, tmp_path, capsys):
    status = prepare.main([str(plain_dir), str(tmp_path / "out"), "--no-progress"])
    assert status == 1
    rows = _read_report(tmp_path / "out" / prepare.REPORT_NAME)
    assert rows["people/sky.png"]["status"] == "no_face" and rows["people/sky.png"]["faces"] == "0"
    assert "prepare FAILED: 1 files, 0 ok, 1 failed (1 no_face)" in capsys.readouterr().err


def test_output_names_never_collide(tmp_path):
    inputs = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpeg", tmp_path / "sub" / "a.jpg"]
    stems = prepare.output_stems(inputs, tmp_path)
    assert [str(stems[path]) for path in inputs] == ["a_jpg", "a_png", "b", os.path.join("sub", "a")]


def test_largest_only_and_png_format(tmp_path):
    photo = read_image(require_shared("data", "raw_photos", "celeba_hq", "male", "005735.jpg"))
    raw = tmp_path / "raw"
    raw.mkdir()
    small = np.asarray(Image.fromarray(photo).resize((256, 256)))
    canvas = np.full((512, 768, 3), 255, np.uint8)
    canvas[:, :512] = photo
    canvas[128:384, 512:] = small
    Image.fromarray(canvas).save(raw / "two.png")
    assert prepare.main([str(raw), str(tmp_path / "all"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "all").glob("*.jpg")) == ["two_face0.jpg", "two_face1.jpg"]
    assert prepare.main([str(raw), str(tmp_path / "one"), "--no-progress", "--largest-only", "--format", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("two_*")) == ["two_face0.png"]


def test_prepare_runs_as_a_module(raw_dir, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "tfcartoon.prepare", str(raw_dir / "people"), str(out),
                             "--report", str(tmp_path / "report.csv")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "prepare OK: 2 files, 2 ok, 0 failed; 2 crops written" in result.stderr
    assert set(_read_report(tmp_path / "report.csv")) == {"anna.jpg", "nested/bob.jpg"}
