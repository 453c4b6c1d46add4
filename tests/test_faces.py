"""Robust image reading (tfcartoon.data.images) and face detection/alignment (tfcartoon.data.faces)."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import require_shared
from tfcartoon.data import faces
from tfcartoon.data.images import ImageReadError, read_image, write_image

CROP = 256


# --------------------------------------------------------------------------- helpers

def _noise(height, width, seed=0):
    """A random RGB uint8 image (JPEG-unfriendly, so truncation really cuts data)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_claiming(path, width, height):
    """Write a tiny PNG whose header claims ``width`` x ``height`` (no pixel data to match)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _read_error(path, **kwargs):
    """Return the ImageReadError that reading ``path`` raises (fails the test if none)."""
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return info.value


def _shared_photo(*parts):
    """An RGB photo from ../shared/data/raw_photos (skips when absent)."""
    return read_image(require_shared("data", "raw_photos", *parts))


@pytest.fixture(scope="module")
def detector():
    """One detector for the module (the MTCNN networks are built once per process)."""
    return faces.FaceDetector(min_face=48)


# --------------------------------------------------------------------------- bad inputs

def test_missing_and_empty_files(tmp_path):
    assert "no such file" in _read_error(tmp_path / "absent.jpg").reason
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty" in _read_error(tmp_path / "empty.jpg").reason
    (tmp_path / "folder.jpg").mkdir()
    assert "not a regular file" in _read_error(tmp_path / "folder.jpg").reason


def test_text_and_random_bytes_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a photo\nsecond line\n")
    (tmp_path / "random.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for name in ("notes.jpg", "random.jpg"):
        assert "not a recognised image format" in _read_error(tmp_path / name).reason


def test_truncated_and_corrupt_files(tmp_path):
    Image.fromarray(_noise(128, 128)).save(tmp_path / "full.jpg", quality=90)
    Image.fromarray(_noise(128, 128)).save(tmp_path / "full.png")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = bytearray((tmp_path / "full.png").read_bytes())
    png[200:210] = bytes(10)
    (tmp_path / "damaged.png").write_bytes(bytes(png))
    assert read_image(tmp_path / "full.jpg").shape == (128, 128, 3)
    for name in ("cut.jpg", "damaged.png"):
        assert "corrupt or truncated" in _read_error(tmp_path / name).reason


def test_tiny_image_is_refused(tmp_path):
    Image.fromarray(_noise(20, 60)).save(tmp_path / "tiny.png")
    assert "below the minimum side of 32" in _read_error(tmp_path / "tiny.png").reason
    assert read_image(tmp_path / "tiny.png", min_side=16).shape == (20, 60, 3)


def test_huge_dimensions_are_refused_before_decoding(tmp_path):
    error = _read_error(_png_claiming(tmp_path / "bomb.png", 10_000, 6_000))
    assert "60.0 MP exceeds the limit of 50 MP" in error.reason
    assert "decompression-bomb" in _read_error(_png_claiming(tmp_path / "giant.png", 30_000, 30_000)).reason
    small = _png_claiming(tmp_path / "small_limit.png", 2_000, 1_000)
    assert "exceeds the limit of 1 MP" in _read_error(small, max_megapixels=1).reason


def test_grayscale_and_palette_become_rgb(tmp_path):
    gray = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (48, 1))
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(_noise(40, 40)).convert("P").save(tmp_path / "palette.gif")
    rgb = read_image(tmp_path / "gray.png")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :, 0], gray)
    np.testing.assert_array_equal(rgb[:, :, 2], gray)
    assert read_image(tmp_path / "palette.gif").shape == (40, 40, 3)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (200, 0, 0, 255)  # opaque red left half, fully transparent black right half
    rgba[:, 20:30, 3] = 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    rgb = read_image(tmp_path / "alpha.png")
    np.testing.assert_array_equal(rgb[0, 0], (200, 0, 0))
    np.testing.assert_array_equal(rgb[0, 35], (255, 255, 255))
    assert 120 <= int(rgb[0, 25, 0]) <= 135  # half-transparent black over white


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (48, 48), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    rgb = read_image(tmp_path / "cmyk.jpg")
    assert rgb.shape == (48, 48, 3)
    red, green, blue = rgb[24, 24].astype(int)
    assert red > 230 and green < 30 and blue < 30


def test_sixteen_bit_png_is_scaled_to_eight_bit(tmp_path):
    gray16 = np.full((40, 40), 65535, np.uint16)
    gray16[:, 20:] = 32896  # 128 * 257
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    color16 = np.zeros((40, 40, 3), np.uint16)
    color16[..., 2] = 65535  # red in OpenCV's BGR order
    color16[..., 1] = 25700  # 100 * 257
    cv2.imwrite(str(tmp_path / "color16.png"), color16)
    gray = read_image(tmp_path / "gray16.png")
    np.testing.assert_array_equal(gray[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(gray[0, 30], (128, 128, 128))
    color = read_image(tmp_path / "color16.png")
    assert color.dtype == np.uint8
    np.testing.assert_allclose(color[5, 5], (255, 100, 0), atol=1)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.full((80, 40, 3), 255, np.uint8)  # portrait as stored: 40 wide, 80 tall
    stored[:10, :10] = (255, 0, 0)  # red in the stored top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones write for portrait shots
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgb = read_image(tmp_path / "phone.jpg")
    assert rgb.shape == (40, 80, 3)
    assert rgb[3, 76, 0] > 200 and rgb[3, 76, 1] < 60  # stored top-left shows at the top-right
    assert rgb[3, 3, 1] > 200


def test_write_image_is_atomic_and_refuses_to_overwrite(tmp_path):
    first, second = _noise(32, 48, seed=1), _noise(32, 48, seed=2)
    target = tmp_path / "sub" / "out.png"
    write_image(target, first)
    np.testing.assert_array_equal(read_image(target), first)
    with pytest.raises(FileExistsError, match="out.png"):
        write_image(target, second)
    np.testing.assert_array_equal(read_image(target), first)
    write_image(target, second, overwrite=True)
    np.testing.assert_array_equal(read_image(target), second)
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "float.png", first.astype(np.float32))
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "out.xyz", first)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    assert not (tmp_path / "float.png").exists()
    assert target.stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable like any new file, not 0600


def _umask():
    """The current umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_image(tmp_path / "out.jpg", _noise(32, 32))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- detection

def test_pyramid_stays_above_pnet_window():
    scales = faces.pyramid_scales(512, 48)
    assert scales[0] == pytest.approx(12 / 48)
    assert 512 * scales[-1] >= 12 > 512 * scales[-1] * 0.709
    assert faces.pyramid_scales(40, 48) == []


def test_no_face_in_flat_or_small_images(detector):
    assert detector.detect(np.full((300, 400, 3), (90, 140, 200), np.uint8)) == []
    assert detector.detect(np.full((40, 40, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="min_face"):
        faces.FaceDetector(min_face=8)


def test_detects_one_face_with_ordered_landmarks(detector):
    photo = _shared_photo("celeba_hq", "female", "015248.jpg")
    found = detector.detect(photo)
    assert len(found) == 1
    face = found[0]
    x1, y1, x2, y2 = face.box
    assert face.confidence >= 0.8 and face.size >= 48
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float64
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))
    left_eye, right_eye, nose, mouth_left, _ = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_left[1]


def test_many_faces_in_one_photo(detector):
    first = cv2.resize(_shared_photo("celeba_hq", "female", "015248.jpg"), (384, 384))
    second = _shared_photo("celeba_hq", "male", "005735.jpg")
    canvas = np.full((512, 896, 3), 255, np.uint8)
    canvas[64:448, :384] = first
    canvas[:, 384:] = second
    found = detector.detect(canvas)
    assert len(found) == 2
    assert found[0].size > found[1].size  # largest first: the 512-px photo's face
    assert found[0].box[0] > 384 > found[1].box[2]
    for face in found:
        crop = faces.align_face(canvas, face)
        assert crop.image.shape == (CROP, CROP, 3)


def test_small_faces_are_dropped(detector):
    small = cv2.resize(_shared_photo("celeba_hq", "male", "005735.jpg"), (80, 80), interpolation=cv2.INTER_AREA)
    assert detector.detect(small) == []
    assert len(faces.FaceDetector(min_face=20).detect(small)) == 1


def test_large_photos_are_detected_downscaled():
    photo = _shared_photo("celeba_hq", "male", "005735.jpg")
    full = faces.FaceDetector(max_side=1024).detect(photo)[0]
    reduced = faces.FaceDetector(max_side=256).detect(photo)[0]
    eye_distance = np.linalg.norm(full.landmarks[1] - full.landmarks[0])
    assert np.abs(reduced.landmarks - full.landmarks).max() < 0.1 * eye_distance
    assert np.abs(reduced.box - full.box).max() < 0.25 * eye_distance


# --------------------------------------------------------------------------- alignment (synthetic)

def _synthetic_landmarks(angle_degrees, eye_distance=60.0, centre=(300.0, 250.0)):
    """A frontal face's 5 landmarks (eye distance d, mouth 1.1 d below), rotated about the eye centre."""
    template = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.6], [-0.4, 1.1], [0.4, 1.1]]) * eye_distance
    theta = np.radians(angle_degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return template @ rotation.T + np.asarray(centre)


@pytest.mark.parametrize("angle", [-40.0, 0.0, 25.0])
def test_crop_levels_the_eyes_and_frames_like_the_reference(angle):
    landmarks = _synthetic_landmarks(angle)
    affine = faces.crop_affine(landmarks, CROP)
    in_crop = faces.transform_points(affine, landmarks)
    assert abs(in_crop[0, 1] - in_crop[1, 1]) < 1e-6
    assert in_crop[0, 0] < in_crop[1, 0]
    eye_centre = in_crop[:2].mean(axis=0)
    np.testing.assert_allclose(eye_centre, (128.0, 118.9), atol=1.0)
    assert abs(in_crop[3, 1] - 187.5) < 2.0  # mouth line, as in data/p2c's reference crops


def test_crop_pads_with_white_outside_the_photo():
    black = np.zeros((200, 200, 3), np.uint8)
    face = faces.Face(box=np.array([0.0, 0.0, 60.0, 80.0]), confidence=1.0,
                      landmarks=_synthetic_landmarks(10.0, eye_distance=30.0, centre=(25.0, 30.0)))
    aligned = faces.align_face(black, face, size=128)
    assert aligned.image.shape == (128, 128, 3)
    np.testing.assert_array_equal(aligned.image[2, 2], (255, 255, 255))  # above-left of the photo
    eye = np.rint(aligned.landmarks[0]).astype(int)
    np.testing.assert_array_equal(aligned.image[eye[1], eye[0]], (0, 0, 0))


def test_segmenter_hook_whitens_the_background():
    photo = np.full((300, 300, 3), 40, np.uint8)
    face = faces.Face(box=np.array([100.0, 100.0, 200.0, 200.0]), confidence=1.0,
                      landmarks=_synthetic_landmarks(0.0, eye_distance=50.0, centre=(150.0, 130.0)))

    def left_half_is_background(crop):
        mask = np.ones(crop.shape[:2], np.float32)
        mask[:, : crop.shape[1] // 2] = 0.0
        return mask

    plain = faces.align_face(photo, face)
    segmented = faces.align_face(photo, face, segmenter=left_half_is_background)
    assert np.all(segmented.image[:, :100] == 255)
    np.testing.assert_array_equal(segmented.image[:, 200:], plain.image[:, 200:])


def test_tflite_segmenter_runs_a_model_file(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32)])
    def red_is_person(images):
        return images[..., :1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([red_is_person.get_concrete_function()])
    model_path = tmp_path / "red.tflite"
    model_path.write_bytes(converter.convert())
    segmenter = faces.TFLiteSegmenter(model_path)
    image = np.zeros((100, 120, 3), np.uint8)
    image[:, :60, 0] = 255
    mask = segmenter(image)
    assert mask.shape == (100, 120) and mask.dtype == np.float32
    assert mask[50, 10] > 0.95 and mask[50, 110] < 0.05


# --------------------------------------------------------------------------- paste back

def test_feather_mask_is_soft_at_the_edges():
    mask = faces.feather_mask(100, feather=0.1)
    assert mask[50, 50] == 1.0 and mask[0, 0] < 0.01 and 0.0 < mask[50, 4] < 1.0
    assert np.all(np.diff(mask[50, :50]) >= 0)


def test_paste_back_round_trip_and_edit():
    photo = _shared_photo("celeba_hq", "male", "005735.jpg")
    face = faces.FaceDetector().detect(photo)[0]
    aligned = faces.align_face(photo, face, size=512)  # no downscaling: the round trip is nearly lossless
    unchanged = faces.paste_back(photo, aligned.image, aligned.affine)
    assert unchanged.shape == photo.shape and unchanged.dtype == np.uint8
    assert np.abs(unchanged.astype(int) - photo).mean() < 1.5
    black = faces.paste_back(photo, np.zeros_like(aligned.image), aligned.affine)
    nose = np.rint(face.landmarks[2]).astype(int)
    assert black[nose[1], nose[0]].max() < 5
    np.testing.assert_array_equal(black[-1, -1], photo[-1, -1])  # outside the crop: untouched
    edge = np.rint(faces.transform_points(cv2.invertAffineTransform(aligned.affine), [[256.0, 4.0]])[0]).astype(int)
    assert 0 < black[edge[1], edge[0]].astype(int).sum() < photo[edge[1], edge[0]].astype(int).sum()


def test_aligned_landmarks_match_a_fresh_detection(detector):
    photo = _shared_photo("celeba_hq", "female", "015248.jpg")
    rotated = cv2.warpAffine(photo, cv2.getRotationMatrix2D((256, 256), 25, 1.0), (512, 512),
                             borderMode=cv2.BORDER_REFLECT)
    aligned = faces.align_face(rotated, detector.detect(rotated)[0])
    again = detector.detect(aligned.image)[0]
    eye_distance = np.linalg.norm(aligned.landmarks[1] - aligned.landmarks[0])
    assert np.abs(again.landmarks - aligned.landmarks).max() < 0.15 * eye_distance
    assert abs(again.landmarks[0, 1] - again.landmarks[1, 1]) < 0.1 * eye_distance


# --------------------------------------------------------------------------- acceptance on raw photos

def _well_aligned(aligned):
    """Eyes level (within 2 px), roughly centred, in the upper half, at a plausible scale."""
    (left_x, left_y), (right_x, right_y) = aligned.landmarks[:2]
    eye_distance = right_x - left_x
    return (aligned.image.shape == (CROP, CROP, 3)
            and abs(left_y - right_y) <= 2.0
            and 0.35 * CROP < (left_x + right_x) / 2 < 0.65 * CROP
            and 0.25 * CROP < (left_y + right_y) / 2 < 0.5 * CROP
            and 0.12 * CROP < eye_distance < 0.4 * CROP)


def test_acceptance_raw_photos_align(detector):
    root = require_shared("data", "raw_photos")
    paths = sorted(p for p in Path(root).rglob("*") if p.is_file())
    assert len(paths) >= 90
    good, failures = 0, []
    for path in paths:
        photo = read_image(path)
        found = detector.detect(photo)
        if found and _well_aligned(faces.align_face(photo, found[0])):
            good += 1
        else:
            failures.append(os.path.relpath(path, root))
    assert good / len(paths) >= 0.95, f"{good}/{len(paths)} aligned; failed: {failures}"
