"""Face detection (MTCNN), eye-level alignment and cropping, and pasting back.

``FaceDetector.detect`` finds every face above a minimum size with its box,
confidence and 5 landmarks. ``align_face`` rotates the photo so the eyes are
level and crops a square around the face, extended up to include the hair, the
way the photo2cartoon reference does: the landmark box grown 0.8 H up, 0.3 H
down and 0.3 W each side, made square, padded with white, resized. The
reference uses 68 landmarks; from MTCNN's 5 points the 68-point box is
estimated with constants calibrated so that re-aligning the reference-aligned
photos of ``data/p2c`` reproduces their framing (eye centre at about
(127, 119) and 61 px between the eyes in a 256 crop). ``paste_back`` puts a
(cartoonised) crop back into the original photo through the same affine.

Background removal is an optional hook (``segmenter``), off by default: see
``TFLiteSegmenter`` for a ready one that runs a person-segmentation ``.tflite``.
"""

import dataclasses
import functools

import cv2
import numpy as np
import tensorflow as tf
from mtcnn import MTCNN
from mtcnn.stages import StageONet, StagePNet, StageRNet
from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes
from mtcnn.utils.images import scale_images

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of ``Face.landmarks`` rows; left/right as seen in the image (MTCNN's naming)."""

GROW_UP, GROW_DOWN, GROW_SIDE = 0.8, 0.3, 0.3
"""Reference growth of the landmark box: fractions of its height (up, down) and width (each side)."""

# The 68-point landmark box (brows to chin, jaw side to jaw side) estimated from
# 5 points, in the eye-level frame: its top lies _BOX_TOP eye-to-mouth heights
# above the eye line, it is _BOX_HEIGHT such heights tall and _BOX_WIDTH eye
# distances wide, centred between the eye centre and the mouth centre.
_BOX_TOP = 0.31
_BOX_HEIGHT = 1.77
_BOX_WIDTH = 2.34

_PNET_INPUT = 12


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    Attributes:
        box: float array (4,): x1, y1, x2, y2.
        confidence: MTCNN's final (ONet) score in [0, 1].
        landmarks: float array (5, 2) of (x, y), rows in ``LANDMARK_NAMES`` order.
    """

    box: np.ndarray
    confidence: float
    landmarks: np.ndarray

    @property
    def size(self):
        """The box's shorter side in pixels (what ``min_face`` is compared with)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """An aligned square crop and how it relates to the source photo.

    Attributes:
        image: uint8 (size, size, 3) RGB crop, eyes level, white where the crop
            leaves the photo (and behind the head when a segmenter was used).
        landmarks: float (5, 2) landmarks in crop pixel coordinates.
        affine: float64 (2, 3) matrix mapping photo (x, y, 1) to crop (x, y).
        face: the detection it was made from.
    """

    image: np.ndarray
    landmarks: np.ndarray
    affine: np.ndarray
    face: Face


def _compiled(model, patch_size=None):
    """Wrap an MTCNN Keras network in one traced tf.function (eager Keras calls cost ~15 ms each).

    ``patch_size`` fixes the spatial input size (RNet 24, ONet 48); None leaves it
    free (PNet is fully convolutional), so each network is traced once.
    """
    spec = tf.TensorSpec([None, patch_size, patch_size, 3], tf.float32)

    @tf.function(input_signature=[spec])
    def run(images):
        return model(images, training=False)

    return run


class _PyramidPNet(StagePNet):
    """MTCNN's PNet stage, traced, with an image pyramid that honours ``min_face_size``.

    mtcnn 1.0.0 counts pyramid levels from the image size alone, so with a
    ``min_face_size`` above about 24 px the last levels fall below PNet's 12 px
    input and the whole detection silently returns no face. Here the levels run
    from 12 / min_face_size down to the last one still at least 12 px. Expects a
    batch of one image, as ``FaceDetector`` passes.
    """

    def __init__(self):
        super().__init__()
        self._model = _compiled(self._model)

    def __call__(self, images_normalized, images_oshapes, min_face_size=20, scale_factor=0.709,
                 threshold_pnet=0.6, nms_pnet1=0.5, nms_pnet2=0.7, **kwargs):
        scales = pyramid_scales(min(images_normalized.shape[1:3]), min_face_size, scale_factor)
        batch_size = images_normalized.shape[0]
        per_scale = []
        for scale in scales:
            scores_offsets = self._model(scale_images(images_normalized, scale))
            proposals = generate_bounding_box(scores_offsets[0], scores_offsets[1], threshold_pnet)
            proposals = upscale_bboxes(proposals, np.full(batch_size, scale))
            per_scale.append(smart_nms_from_bboxes(proposals, threshold=nms_pnet1, method="union", initial_sort=False))
        merged = np.concatenate(per_scale, axis=0)
        merged = smart_nms_from_bboxes(merged, threshold=nms_pnet2, method="union", initial_sort=True)
        return resize_to_square(merged)


def pyramid_scales(min_side, min_face_size, scale_factor=0.709):
    """Scales at which PNet (12 px window) sees faces from ``min_face_size`` px up.

    Starts at 12 / min_face_size and shrinks by ``scale_factor`` while the
    image's shorter side ``min_side`` stays at least 12 px; empty when the
    image is smaller than the minimum face.
    """
    scales = []
    scale = _PNET_INPUT / float(min_face_size)
    while min_side * scale >= _PNET_INPUT:
        scales.append(scale)
        scale *= scale_factor
    return scales


class _TracedRNet(StageRNet):
    """MTCNN's RNet stage with its network traced once."""

    def __init__(self):
        super().__init__()
        self._model = _compiled(self._model, 24)


class _RefinedONet(StageONet):
    """MTCNN's ONet stage, traced, run twice for steadier landmarks.

    ONet's landmarks depend on the box it is shown: an unlucky proposal can
    shift the mouth by a quarter of the eye distance. The second pass looks at
    the square version of the box the first pass refined, which brings the
    landmarks' spread across pyramid settings on data/raw_photos from up to
    0.30 to under 0.07 eye distances.
    """

    def __init__(self):
        super().__init__()
        self._model = _compiled(self._model, 48)

    def __call__(self, images_normalized, bboxes_batch, **kwargs):
        first = super().__call__(images_normalized=images_normalized, bboxes_batch=bboxes_batch, **kwargs)
        if first.shape[0] == 0:
            return first
        boxes = resize_to_square(np.array(first[:, :6]))
        return super().__call__(images_normalized=images_normalized, bboxes_batch=boxes, **kwargs)


@functools.lru_cache(maxsize=1)
def _mtcnn():
    """The process-wide MTCNN (weights ship in the wheel), built on first use."""
    return MTCNN(stages=[_PyramidPNet, _TracedRNet, _RefinedONet])


class FaceDetector:
    """MTCNN face detector returning every face above a minimum size.

    The MTCNN networks are built once per process and shared by all instances.
    Large photos are downscaled so their longer side is at most ``max_side``
    before detection, and the results are mapped back to full resolution.
    """

    def __init__(self, min_face=48, min_confidence=0.8, max_side=1024):
        """Configure detection.

        Args:
            min_face: smallest face (box's shorter side, full-resolution pixels) to keep.
            min_confidence: smallest MTCNN final score to keep (0.8 is MTCNN's own ONet threshold).
            max_side: longer side, in pixels, the photo is downscaled to for detection.
        """
        if min_face < _PNET_INPUT:
            raise ValueError(f"min_face must be at least {_PNET_INPUT} px (MTCNN's window), got {min_face}")
        if max_side < 2 * _PNET_INPUT:
            raise ValueError(f"max_side must be at least {2 * _PNET_INPUT} px, got {max_side}")
        self.min_face = min_face
        self.min_confidence = min_confidence
        self.max_side = max_side

    def detect(self, image):
        """Return the faces in an RGB uint8 image, largest first (list of ``Face``)."""
        image = _check_rgb(image, "FaceDetector.detect")
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image
        if scale < 1.0:
            small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        min_face_small = max(_PNET_INPUT, self.min_face * scale)
        if min(small.shape[:2]) < min_face_small:
            return []
        rows = _mtcnn().detect_faces(small, min_face_size=min_face_small, output_type="numpy", box_format="xyxy")
        found = [_row_to_face(row, scale) for row in np.asarray(rows).reshape(-1, 16)]
        found = [f for f in found if f.confidence >= self.min_confidence and f.size >= self.min_face]
        return sorted(found, key=lambda f: f.size, reverse=True)


def _row_to_face(row, scale):
    """Turn one MTCNN numpy row (id, x1, y1, x2, y2, score, 5 x, 5 y) into a Face at full resolution."""
    landmarks = np.stack([row[6:11], row[11:16]], axis=1) / scale
    return Face(box=np.asarray(row[1:5], dtype=np.float64) / scale, confidence=float(row[5]), landmarks=landmarks)


def _check_rgb(image, caller):
    """Return ``image`` if it is a uint8 (H, W, 3) array, else raise ValueError naming ``caller``."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{caller}: expected an RGB uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def crop_affine(landmarks, size=256):
    """The 2x3 affine taking photo coordinates to the aligned ``size`` x ``size`` crop.

    Rotates about the eye centre so the eyes are level, estimates the 68-point
    landmark box from the 5 points, grows it by the reference margins
    (``GROW_UP``, ``GROW_DOWN``, ``GROW_SIDE``), makes it square around its
    centre, and scales that square to ``size``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    eye_vector = landmarks[1] - landmarks[0]
    eye_distance = float(np.hypot(*eye_vector))
    if eye_distance < 1e-6:
        raise ValueError(f"crop_affine: the two eye landmarks coincide ({landmarks[0]})")
    cos, sin = eye_vector / eye_distance
    rotation = np.array([[cos, sin], [-sin, cos]])
    eye_centre = landmarks[:2].mean(axis=0)
    mouth = rotation @ (landmarks[3:5].mean(axis=0) - eye_centre)
    eye_to_mouth = max(float(mouth[1]), 0.1 * eye_distance)

    box_height = _BOX_HEIGHT * eye_to_mouth
    box_width = _BOX_WIDTH * eye_distance
    top = -_BOX_TOP * eye_to_mouth - GROW_UP * box_height
    bottom = top + (1.0 + GROW_UP + GROW_DOWN) * box_height
    left = mouth[0] / 2.0 - (0.5 + GROW_SIDE) * box_width
    right = left + (1.0 + 2.0 * GROW_SIDE) * box_width
    side = max(bottom - top, right - left)
    corner = np.array([(left + right - side) / 2.0, (top + bottom - side) / 2.0])

    zoom = size / side
    linear = zoom * rotation
    offset = -linear @ eye_centre - zoom * corner
    return np.concatenate([linear, offset[:, None]], axis=1)


def transform_points(affine, points):
    """Apply a 2x3 affine to an (N, 2) array of points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:, :2].T + affine[:, 2]


def align_face(image, face, size=256, segmenter=None):
    """Crop ``face`` out of ``image``: eyes level, hair included, white padding.

    Args:
        image: RGB uint8 (H, W, 3) photo the face was detected in.
        face: a ``Face`` (or anything with a (5, 2) ``landmarks`` attribute).
        size: side of the square output crop in pixels.
        segmenter: optional callable, RGB uint8 crop -> float mask (size, size) in
            [0, 1] (1 = person); the background is then composited to white.

    Returns:
        AlignedFace with the crop, its landmarks and the photo-to-crop affine.
    """
    image = _check_rgb(image, "align_face")
    affine = crop_affine(face.landmarks, size)
    crop = warp_to_crop(image, affine, size)
    if segmenter is not None:
        crop = composite_on_white(crop, segmenter(crop))
    return AlignedFace(image=crop, landmarks=transform_points(affine, face.landmarks), affine=affine, face=face)


def warp_to_crop(image, affine, size):
    """Warp ``image`` through ``affine`` into a white-padded size x size crop.

    When the crop shrinks the photo, the warp first samples at the photo's own
    resolution and then area-averages down to ``size``, so there is no aliasing.
    """
    zoom = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    white = (255, 255, 255)
    if zoom >= 1.0:
        return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=white)
    native = max(size, int(np.ceil(size / zoom)))
    upscale = native / size
    large = cv2.warpAffine(image, affine * upscale, (native, native), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=white)
    return cv2.resize(large, (size, size), interpolation=cv2.INTER_AREA)


def composite_on_white(rgb, mask):
    """Blend an RGB uint8 image onto white with a float mask in [0, 1] (1 keeps the pixel)."""
    rgb = _check_rgb(rgb, "composite_on_white")
    mask = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"composite_on_white: mask shape {mask.shape} does not match image {rgb.shape[:2]}")
    blended = rgb.astype(np.float32) * mask[:, :, None] + 255.0 * (1.0 - mask[:, :, None])
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def feather_mask(size, feather=0.1):
    """A size x size float32 mask, 1 inside and easing to 0 over ``feather * size`` px at the edges."""
    ramp = max(1.0, feather * size)
    centres = np.arange(size, dtype=np.float32) + 0.5
    to_edge = np.minimum(centres, size - centres)
    linear = np.clip(np.minimum(to_edge[:, None], to_edge[None, :]) / ramp, 0.0, 1.0)
    return linear * linear * (3.0 - 2.0 * linear)


def paste_back(original, crop, affine, feather=0.1, mask=None):
    """Paste an (edited) aligned crop back into the photo it came from.

    Args:
        original: RGB uint8 (H, W, 3) photo passed to ``align_face``.
        crop: RGB uint8 (size, size, 3), same size as the aligned crop.
        affine: the ``AlignedFace.affine`` of that crop.
        feather: width of the soft edge, as a fraction of the crop side.
        mask: optional float (size, size) in [0, 1] restricting what is pasted
            (e.g. a head segmentation); multiplied with the feathered edge.

    Returns:
        A new RGB uint8 array the shape of ``original``.
    """
    original = _check_rgb(original, "paste_back")
    crop = _check_rgb(crop, "paste_back")
    size = crop.shape[0]
    if crop.shape[1] != size:
        raise ValueError(f"paste_back: expected a square crop, got {crop.shape}")
    weight = feather_mask(size, feather)
    if mask is not None:
        weight = weight * np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    height, width = original.shape[:2]
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    pasted = cv2.warpAffine(crop, affine, (width, height), flags=inverse, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(weight, affine, (width, height), flags=inverse,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[:, :, None]
    blended = original.astype(np.float32) * (1.0 - weight) + pasted.astype(np.float32) * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


class TFLiteSegmenter:
    """Person segmentation from a ``.tflite`` model, usable as ``align_face(segmenter=...)``.

    Made for MediaPipe's ``selfie_segmentation.tflite`` (Apache-2.0, 250 KB,
    input float32 [1, 256, 256, 3] in [0, 1], output [1, 256, 256, 1]
    person probability), which ships inside the ``mediapipe==0.10.21`` wheel on
    PyPI at ``mediapipe/modules/selfie_segmentation/``. Any model with one
    image input and one single-channel probability output works.
    """

    def __init__(self, model_path):
        """Load the model (LiteRT's interpreter when installed, else TensorFlow's)."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = tf.lite.Interpreter
        self.model_path = str(model_path)
        self._interpreter = Interpreter(model_path=self.model_path)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = tuple(self._input["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ValueError(f"{self.model_path}: expected an input of shape [1, H, W, 3], got {list(shape)}")
        self._input_size = (int(shape[2]), int(shape[1]))

    def __call__(self, rgb):
        """Return the person probability of every pixel of an RGB uint8 image, float32 (H, W)."""
        rgb = _check_rgb(rgb, "TFLiteSegmenter")
        resized = cv2.resize(rgb, self._input_size, interpolation=cv2.INTER_AREA)
        batch = (resized.astype(np.float32) / 255.0)[None]
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        probability = np.asarray(self._interpreter.get_tensor(self._output["index"]), dtype=np.float32)
        probability = probability.reshape(self._input_size[1], self._input_size[0])
        full = cv2.resize(probability, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(full, 0.0, 1.0)
