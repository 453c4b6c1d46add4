"""Load a trained photo-to-cartoon model in any of its forms and run it on batches.

``load_cartoonizer(path=None, group=None)`` accepts:

- nothing (``None``) or ``preset:NAME``: a preset shipped with the package (the
  default is ``young_women``, see ``tfcartoon.preset``);
- a run directory (it holds ``config.yaml``): the run's latest ``photo2cartoon``
  generator, through ``tfcartoon.load``; ``group`` picks one of its groups;
- a ``.keras`` file holding a saved ``CartoonGenerator`` (``group`` picks one of
  its groups) or a plain single-group model (B, S, S, 3) -> (B, S, S, 3);
- a ``.tflite`` file as exported (``<group>_<precision>.tflite``): float32 input
  in [-1, 1], or the uint8 "app" variant (pixels 0..255, or quantized values when
  the tensor carries quantization parameters); run one image per invoke;
- a ``.onnx`` file as exported (``<group>.onnx``), run with onnxruntime.

Whatever the backend, the returned ``Cartoonizer`` is called the same way:
float32 (B, S, S, 3) in [-1, 1] -> float32 (B, S, S, 3) in [-1, 1].
"""

import json
import logging
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfcartoon.models.generator import CartoonGenerator
from tfcartoon.training.checkpoints import CheckpointError
from tfcartoon.training.run import CONFIG_FILE, TrainingError
from tfcartoon.training.run import load as load_run

log = logging.getLogger(__name__)

MODEL_KINDS = ("a run directory (with config.yaml), a .keras, .tflite or .onnx file, or "
               "preset:NAME")


class ModelLoadError(ValueError):
    """The model path is missing, of an unknown kind, or holds no usable cartoon model."""


class Cartoonizer:
    """A loaded single-group photo-to-cartoon model, whatever its file format.

    Attributes:
        image_size: side S of the square images the model takes.
        group: the group it draws, or None for a single-group file that names none.
        source: the path it was loaded from.
    """

    def __init__(self, run, image_size, group, source):
        """Wrap ``run``, a callable float32 (B, S, S, 3) array -> array of the same shape."""
        self._run = run
        self.image_size = int(image_size)
        self.group = group
        self.source = str(source)

    def __call__(self, batch):
        """Cartoonize a float32 (B, S, S, 3) batch in [-1, 1]; returns float32 (B, S, S, 3) in [-1, 1]."""
        batch = np.asarray(batch, dtype=np.float32)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{self.source}: expected a batch of shape (B, {self.image_size}, "
                             f"{self.image_size}, 3), got {batch.shape}")
        if batch.shape[0] == 0:
            return batch.copy()
        cartoons = np.asarray(self._run(batch), dtype=np.float32)
        if cartoons.shape != batch.shape:
            raise ValueError(f"{self.source}: the model returned shape {cartoons.shape} for a batch of "
                             f"{batch.shape}; expected the same shape")
        return cartoons

    def __repr__(self):
        return f"Cartoonizer({self.source!r}, group={self.group!r}, image_size={self.image_size})"


def load_cartoonizer(path=None, group=None):
    """Load the model at ``path`` (see the module docstring for the accepted kinds).

    Args:
        path: run directory, ``.keras``, ``.tflite`` or ``.onnx`` file, or
            ``preset:NAME``; None loads the default preset.
        group: group to draw; required for a multi-group generator (run directory
            or saved ``CartoonGenerator``), optional otherwise (kept as a label).

    Raises:
        ModelLoadError: the path is missing or of an unknown kind, the file cannot
            be loaded, or the group is missing or unknown (the message lists the
            model's groups).
    """
    from tfcartoon.preset import DEFAULT_PRESET, parse_preset_ref

    preset = DEFAULT_PRESET if path is None else parse_preset_ref(path)
    if preset is not None:
        return _from_preset(preset, group)
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(f"model {path}: folder without {CONFIG_FILE}; expected {MODEL_KINDS}")
        return _from_run_dir(path, group)
    if not path.exists():
        raise ModelLoadError(f"model {path}: no such file or folder; expected {MODEL_KINDS}")
    loaders = {".keras": _from_keras, ".tflite": _from_tflite, ".onnx": _from_onnx}
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise ModelLoadError(f"model {path}: unknown kind {path.suffix or '(no extension)'!r}; "
                             f"expected {MODEL_KINDS}")
    return loader(path, group)


def _from_run_dir(path, group):
    """The photo2cartoon generator of a training run, for ``group``.

    Like ``evaluate``: a base-stage run draws every group with its base branch (the
    only one it trained), with a warning when another group was asked for. A few-shot
    branch this run did not train is used as asked, with a warning.
    """
    from tfcartoon.training.run import trained_groups

    try:
        run = load_run(path)
    except (TrainingError, CheckpointError, ValueError, OSError) as error:
        raise ModelLoadError(f"model {path}: cannot load the run ({_first_line(error)})") from None
    generator, config = run.photo2cartoon, run.config
    trained = trained_groups(config)
    if config.train.stage == "base":
        if group is not None and group != config.base_group:
            _choose_group(generator.groups, group, path)  # an unknown group is still an error
            log.warning("model %s: a base-stage run trains only the %s branch; drawing group "
                        "%r with it (the %s branch is untrained)", path, config.base_group,
                        group, group)
        return _keras_cartoonizer(generator.group_model(config.base_group),
                                  group or config.base_group, path)
    group = _choose_group(generator.groups, group, path)
    if group not in trained:
        log.warning("model %s: the %s branch was not trained by this run (it is a copy of the "
                    "%s branch); its cartoons are the base group's style", path, group,
                    config.base_group)
    return _from_generator(generator, group, path)


def _from_preset(name, group):
    """The photo2cartoon generator of a shipped preset (its base group)."""
    from tfcartoon.preset import PRESET_PREFIX, PresetError, load_preset

    source = f"{PRESET_PREFIX}{name}"
    try:
        generator = load_preset(name).photo2cartoon
    except PresetError as error:
        raise ModelLoadError(f"model {source}: {error}") from None
    return _from_generator(generator, group, source)


def _from_keras(path, group):
    """A saved CartoonGenerator (for ``group``) or a plain single-group Keras model."""
    saved_groups = _saved_generator_groups(path)
    if saved_groups is not None:
        _choose_group(saved_groups, group, path)  # a wrong group fails before the slow load
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelLoadError(f"model {path}: cannot load as a Keras model ({_first_line(error)})") from None
    if isinstance(model, CartoonGenerator):
        return _from_generator(model, group, path)
    return _keras_cartoonizer(model, group, path)


def _saved_generator_groups(path):
    """The groups of a CartoonGenerator saved in the ``.keras`` archive ``path``, from its config.json.

    Reading them does not build the model. None when the archive holds another
    kind of model or cannot be read (``load_model`` then says why).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return None
    generator_name = keras.saving.get_registered_name(CartoonGenerator)
    if not isinstance(config, dict) or config.get("registered_name") != generator_name:
        return None
    return list(config.get("config", {}).get("groups", []))


def _choose_group(groups, group, path):
    """``group`` if it is one of ``groups`` (the only group when None and there is one), else ModelLoadError."""
    if group is None and len(groups) == 1:
        return groups[0]
    if group is None:
        raise ModelLoadError(f"model {path}: holds the groups {groups}; choose one (--group NAME)")
    if group not in groups:
        raise ModelLoadError(f"model {path}: unknown group {group!r}; its groups are {groups}")
    return group


def _from_generator(generator, group, path):
    """The single-group path of a multi-group generator; ``group`` must be one of its groups."""
    group = _choose_group(generator.groups, group, path)
    return _keras_cartoonizer(generator.group_model(group), group, path)


def _keras_cartoonizer(model, group, path):
    """Wrap a single-input Keras model (B, S, S, 3) -> (B, S, S, 3) in one traced tf.function."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1:
        raise ModelLoadError(f"model {path}: expected a CartoonGenerator or a model with one image "
                             "input and one image output")
    size = _square_size(tuple(inputs[0].shape), path)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)

    @tf.function(input_signature=[spec])
    def run(images):
        return model(images, training=False)

    return Cartoonizer(lambda batch: run(batch).numpy(), size, group, path)


def _model_card(path):
    """The model card the export scripts write beside ``path`` (``<file>.json``), or None."""
    card_path = path.with_name(path.name + ".json")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def _card_group(card, group, path):
    """``group`` checked against the single group a model card names (None: no card)."""
    groups = (card or {}).get("groups")
    if not isinstance(groups, list) or len(groups) != 1:
        return group
    if group is not None and group != groups[0]:
        raise ModelLoadError(f"model {path}: its model card says it draws {groups[0]!r}, "
                             f"not {group!r}; drop --group or pick that group's file")
    return groups[0]


def _from_tflite(path, group):
    """A ``.tflite`` model, run one image per invoke; a ``--multigroup`` file is given
    the group's index (from its model card) with each image."""
    runner = _TFLiteRunner(path)
    card = _model_card(path)
    if runner.group_input is None:
        return Cartoonizer(runner, runner.image_size, _card_group(card, group, path), path)
    groups = (card or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        raise ModelLoadError(f"model {path}: a multi-group file takes a group index; its model "
                             f"card {path.name}.json (written by export/to_tflite.py "
                             "--multigroup) names the groups and is missing or unreadable")
    group = _choose_group(groups, group, path)
    runner.group_index = groups.index(group)
    return Cartoonizer(runner, runner.image_size, group, path)


def _from_onnx(path, group):
    """A ``.onnx`` model, run with onnxruntime."""
    runner = _OnnxRunner(path)
    return Cartoonizer(runner, runner.image_size, _card_group(_model_card(path), group, path),
                       path)


class _TFLiteRunner:
    """Run a one-input, one-output TFLite image model on a batch, image by image."""

    def __init__(self, path):
        """Load the model (LiteRT's interpreter when installed, else TensorFlow's)."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = tf.lite.Interpreter
        try:
            self._interpreter = Interpreter(model_path=str(path))
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"model {path}: cannot load as a TFLite model ({_first_line(error)})") from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        # a --multigroup export has a second input: the group index, (1,) int32
        groups = [d for d in inputs if np.dtype(d["dtype"]) == np.int32
                  and tuple(d["shape"]) == (1,)]
        images = [d for d in inputs if d not in groups]
        if len(images) != 1 or len(groups) > 1 or len(outputs) != 1:
            raise ModelLoadError(f"model {path}: expected one image input (and optionally a "
                                 f"group index) and one image output, got {len(inputs)} inputs "
                                 f"and {len(outputs)} outputs")
        self._input, self._output = images[0], outputs[0]
        self.group_input = groups[0] if groups else None
        self.group_index = 0
        self.image_size = _square_size(tuple(self._input["shape"]), path)
        for details in (self._input, self._output):
            _check_dtype(np.dtype(details["dtype"]), path)

    def __call__(self, batch):
        """Invoke once per image; returns float32 (B, S, S, 3) in [-1, 1]."""
        results = []
        for image in batch:
            encoded = _encode(image[None], np.dtype(self._input["dtype"]), self._input["quantization"])
            self._interpreter.set_tensor(self._input["index"], encoded)
            if self.group_input is not None:
                self._interpreter.set_tensor(self.group_input["index"],
                                             np.array([self.group_index], np.int32))
            self._interpreter.invoke()
            output = self._interpreter.get_tensor(self._output["index"])
            results.append(_decode(output, self._output["quantization"]))
        return np.concatenate(results, axis=0)


_ONNX_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(uint8)": np.dtype(np.uint8)}


class _OnnxRunner:
    """Run a one-input, one-output ONNX image model on a batch (image by image if its batch is fixed at 1)."""

    def __init__(self, path):
        """Open an onnxruntime session on the GPU when onnxruntime has one, else on the CPU."""
        try:
            import onnxruntime
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
        except ImportError:
            raise ModelLoadError(f"model {path}: .onnx models need onnxruntime "
                                 "(pip install 'tfcartoon[export]')") from None
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        load_errors = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail,
                       ort_errors.InvalidArgument, ort_errors.NoSuchFile, ort_errors.RuntimeException)
        try:
            self._session = onnxruntime.InferenceSession(str(path), providers=providers)
        except load_errors as error:
            raise ModelLoadError(f"model {path}: cannot load as an ONNX model ({_first_line(error)})") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"model {path}: expected one image input and one image output, "
                                 f"got {len(inputs)} inputs and {len(outputs)} outputs")
        self._input, self._output = inputs[0], outputs[0]
        self.image_size = _square_size(tuple(self._input.shape), path)
        for details in (self._input, self._output):
            if details.type not in _ONNX_TYPES:
                raise ModelLoadError(f"model {path}: {details.name} is {details.type}; "
                                     "expected tensor(float) or tensor(uint8)")
        self._dtype = _ONNX_TYPES[self._input.type]
        fixed = self._input.shape[0]
        self._batch = fixed if isinstance(fixed, int) else None

    def __call__(self, batch):
        """Run the batch; returns float32 (B, S, S, 3) in [-1, 1]."""
        def run(chunk):
            feed = {self._input.name: _encode(chunk, self._dtype, (0.0, 0))}
            return _decode(self._session.run([self._output.name], feed)[0], (0.0, 0))

        return run_in_batches(run, batch, self._batch)


def run_in_batches(run, images, batch):
    """``run`` over ``images`` in chunks of a model's fixed ``batch`` (None: all at once).

    A short last chunk is padded with copies of its last image, whose outputs are dropped.
    """
    if batch is None:
        return run(images)
    results = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padding = np.repeat(chunk[-1:], batch - len(chunk), axis=0)
        results.append(run(np.concatenate([chunk, padding]))[:len(chunk)])
    return np.concatenate(results, axis=0)


def _square_size(shape, path):
    """S from an input shape (B, S, S, 3); raises ModelLoadError for any other shape."""
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], (int, np.integer)) or shape[1] != shape[2]:
        raise ModelLoadError(f"model {path}: expected an image input of shape (B, S, S, 3), got {list(shape)}")
    return int(shape[1])


def _check_dtype(dtype, path):
    """Accept float32 ([-1, 1]) and uint8 (pixels or quantized) image tensors only."""
    if dtype not in (np.float32, np.uint8):
        raise ModelLoadError(f"model {path}: image tensors are {dtype}; expected float32 or uint8")


def _encode(batch, dtype, quantization):
    """Turn a float batch in [-1, 1] into the model's input type.

    uint8 inputs take the quantized value ``x / scale + zero_point`` when the
    tensor has a quantization scale, else plain pixels ``(x + 1) * 127.5``.
    """
    if dtype == np.float32:
        return batch
    scale, zero_point = quantization
    values = batch / scale + zero_point if scale > 0 else (batch + 1.0) * 127.5
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _decode(output, quantization):
    """Turn a model output (float, or uint8 as in ``_encode``) back into float32 in [-1, 1]."""
    output = np.asarray(output)
    if output.dtype != np.uint8:
        return output.astype(np.float32)
    scale, zero_point = quantization
    if scale > 0:
        return ((output.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return output.astype(np.float32) / 127.5 - 1.0


def _first_line(error):
    """The first line of an exception's message (loaders' messages can be long)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
