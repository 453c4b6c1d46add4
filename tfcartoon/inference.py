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

from tfcartoon.models.generator import AUTO_GROUP, CartoonGenerator
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
        batch = self._checked(batch)
        if batch.shape[0] == 0:
            return batch.copy()
        return self._checked_output(self._run(batch), batch)

    def _checked(self, batch):
        batch = np.asarray(batch, dtype=np.float32)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{self.source}: expected a batch of shape (B, {self.image_size}, "
                             f"{self.image_size}, 3), got {batch.shape}")
        return batch

    def _checked_output(self, cartoons, batch):
        cartoons = np.asarray(cartoons, dtype=np.float32)
        if cartoons.shape != batch.shape:
            raise ValueError(f"{self.source}: the model returned shape {cartoons.shape} for a batch of "
                             f"{batch.shape}; expected the same shape")
        return cartoons

    def __repr__(self):
        return f"Cartoonizer({self.source!r}, group={self.group!r}, image_size={self.image_size})"


class RoutedCartoonizer(Cartoonizer):
    """A multi-group model whose group classifier picks each face's branch (``group="auto"``).

    Called like any ``Cartoonizer``; ``routed(batch)`` also says where each face went.

    Attributes:
        groups: the model's groups, in the classifier's order (base group first).
        threshold: below this top probability a face is drawn by the base group.
    """

    def __init__(self, run_routed, image_size, groups, threshold, source):
        """``run_routed(batch)`` -> (cartoons, (B, G) probabilities), routing inside."""
        super().__init__(lambda batch: run_routed(batch)[0], image_size, AUTO_GROUP, source)
        self._run_routed = run_routed
        self.groups, self.threshold = list(groups), float(threshold)

    def routed(self, batch):
        """(cartoons, one ``tfcartoon.classifier.Route`` per face) of a float32 batch in [-1, 1]."""
        from tfcartoon.classifier import routes_from_probabilities

        batch = self._checked(batch)
        if batch.shape[0] == 0:
            return batch.copy(), []
        cartoons, probabilities = self._run_routed(batch)
        return (self._checked_output(cartoons, batch),
                routes_from_probabilities(probabilities, self.groups, self.threshold))


def load_cartoonizer(path=None, group=None, classifier=None):
    """Load the model at ``path`` (see the module docstring for the accepted kinds).

    Args:
        path: run directory, ``.keras``, ``.tflite`` or ``.onnx`` file, or
            ``preset:NAME``; None loads the default preset.
        group: group to draw; required for a multi-group generator (run directory
            or saved ``CartoonGenerator``), optional otherwise (kept as a label).
            ``"auto"``: a group classifier picks each face's group (a
            ``RoutedCartoonizer``); an ``auto`` export routes by itself.
        classifier: with ``group="auto"`` and a Keras model, the group classifier
            file (default: the run directory's ``group_classifier.keras``).

    Raises:
        ModelLoadError: the path is missing or of an unknown kind, the file cannot
            be loaded, the group is missing or unknown (the message lists the
            model's groups), or ``auto`` has no classifier that fits.
    """
    from tfcartoon.preset import DEFAULT_PRESET, parse_preset_ref

    if classifier is not None and group != AUTO_GROUP:
        raise ModelLoadError(f"a group classifier ({classifier}) routes faces only with group "
                             f"{AUTO_GROUP!r}; got group {group!r}")
    preset = DEFAULT_PRESET if path is None else parse_preset_ref(path)
    if preset is not None:
        return _from_preset(preset, group)
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(f"model {path}: folder without {CONFIG_FILE}; expected {MODEL_KINDS}")
        return _from_run_dir(path, group, classifier)
    if not path.exists():
        raise ModelLoadError(f"model {path}: no such file or folder; expected {MODEL_KINDS}")
    loaders = {".keras": _from_keras, ".tflite": _from_tflite, ".onnx": _from_onnx}
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise ModelLoadError(f"model {path}: unknown kind {path.suffix or '(no extension)'!r}; "
                             f"expected {MODEL_KINDS}")
    if path.suffix.lower() == ".keras":
        return loader(path, group, classifier)
    if classifier is not None:
        raise ModelLoadError(f"model {path}: an exported file cannot take a classifier; export "
                             "the auto variant (export/to_tflite.py --auto), which holds one")
    return loader(path, group)


def _from_run_dir(path, group, classifier=None):
    """The photo2cartoon generator of a training run, for ``group``.

    Like ``evaluate``: a base-stage run draws every group with its base branch (the
    only one it trained), with a warning when another group was asked for. A few-shot
    branch this run did not train is used as asked, with a warning. ``auto`` routes
    with the run's classifier (or ``classifier``).
    """
    from tfcartoon.classifier import default_path
    from tfcartoon.training.run import trained_groups

    try:
        run = load_run(path)
    except (TrainingError, CheckpointError, ValueError, OSError) as error:
        raise ModelLoadError(f"model {path}: cannot load the run ({_first_line(error)})") from None
    generator, config = run.photo2cartoon, run.config
    trained = trained_groups(config)
    if group == AUTO_GROUP:
        if config.train.stage == "base":
            raise ModelLoadError(f"model {path}: a base-stage run trains only the "
                                 f"{config.base_group} branch; routing between groups needs a "
                                 "few-shot run (python -m tfcartoon.train --stage fewshot)")
        untrained = [g for g in config.groups[1:] if g not in trained]
        if untrained:
            log.warning("model %s: the branches of %s were not trained by this run (copies of "
                        "the %s branch); faces routed to them get the base group's style",
                        path, untrained, config.base_group)
        return _routed_keras(generator, classifier or default_path(path), path)
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
    if group == AUTO_GROUP:
        raise ModelLoadError(f"model {source}: a preset holds the {generator.groups[0]} branch "
                             "only; routing needs a few-shot run with several trained groups "
                             f"(python -m tfcartoon.train --stage fewshot --init {source})")
    return _from_generator(generator, group, source)


def _from_keras(path, group, classifier=None):
    """A saved CartoonGenerator (for ``group``) or a plain single-group Keras model."""
    saved_groups = _saved_generator_groups(path)
    if saved_groups is not None and group != AUTO_GROUP:
        _choose_group(saved_groups, group, path)  # a wrong group fails before the slow load
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelLoadError(f"model {path}: cannot load as a Keras model ({_first_line(error)})") from None
    if group == AUTO_GROUP:
        if not isinstance(model, CartoonGenerator):
            raise ModelLoadError(f"model {path}: routing (group {AUTO_GROUP!r}) needs a "
                                 "multi-group CartoonGenerator; this file holds one path")
        if classifier is None:
            raise ModelLoadError(f"model {path}: group {AUTO_GROUP!r} needs a group classifier "
                                 "for a .keras file (--classifier FILE)")
        return _routed_keras(model, classifier, path)
    if isinstance(model, CartoonGenerator):
        return _from_generator(model, group, path)
    return _keras_cartoonizer(model, group, path)


def _routed_keras(generator, classifier_path, source):
    """A ``RoutedCartoonizer`` over ``generator``'s group paths with the classifier at ``classifier_path``."""
    from tfcartoon.classifier import ClassifierError, load_group_classifier, routes_from_probabilities

    try:
        classifier = load_group_classifier(classifier_path, generator.groups,
                                           generator.image_size)
    except ClassifierError as error:
        raise ModelLoadError(f"model {source}: {error}") from None
    paths = {}

    def run_routed(batch):
        probabilities = classifier.probabilities(batch)
        cartoons = np.empty_like(batch)
        routes = routes_from_probabilities(probabilities, classifier.groups, classifier.threshold)
        for route_group, indices in _faces_per_group(routes).items():
            if route_group not in paths:
                paths[route_group] = _from_generator(generator, route_group, source)
            cartoons[indices] = paths[route_group](batch[indices])
        return cartoons, probabilities

    return RoutedCartoonizer(run_routed, generator.image_size, generator.groups,
                             classifier.threshold, source)


def _faces_per_group(routes):
    """{group: [face indices]} of a list of routes, in order of first appearance."""
    faces = {}
    for index, route in enumerate(routes):
        faces.setdefault(route.group, []).append(index)
    return faces


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


def _routed_file(runner, card, group, path):
    """A ``RoutedCartoonizer`` for an exported ``auto`` file (it routes inside), or None for another file."""
    if runner.probabilities_output is None:
        if group == AUTO_GROUP:
            raise ModelLoadError(f"model {path}: holds no group classifier; export the auto "
                                 "variant (--auto) to route faces, or name a group")
        return None
    if group not in (None, AUTO_GROUP):
        raise ModelLoadError(f"model {path}: an auto file picks each face's group itself; drop "
                             f"--group {group} (or pass --group {AUTO_GROUP})")
    routing = (card or {}).get("routing") or {}
    groups, threshold = (card or {}).get("groups"), routing.get("threshold")
    if not isinstance(groups, list) or not groups or threshold is None:
        raise ModelLoadError(f"model {path}: an auto file's model card {path.name}.json names its "
                             "groups and threshold; it is missing or unreadable")
    return RoutedCartoonizer(runner.run_routed, runner.image_size, groups, threshold, path)


def _from_tflite(path, group):
    """A ``.tflite`` model, run one image per invoke; a ``--multigroup`` file is given
    the group's index (from its model card) with each image, an ``--auto`` file routes
    each image itself."""
    runner = _TFLiteRunner(path)
    card = _model_card(path)
    routed = _routed_file(runner, card, group, path)
    if routed is not None:
        return routed
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
    card = _model_card(path)
    routed = _routed_file(runner, card, group, path)
    if routed is not None:
        return routed
    return Cartoonizer(runner, runner.image_size, _card_group(card, group, path), path)


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
        # an --auto export has a second output: the group probabilities, (1, G) float32
        try:
            image_outputs, probabilities = _split_outputs(outputs, lambda d: d["shape"])
        except ModelLoadError as error:
            raise ModelLoadError(f"model {path}: {error}") from None
        if len(images) != 1 or len(groups) > 1 or (groups and probabilities):
            raise ModelLoadError(f"model {path}: expected one image input (and optionally a "
                                 f"group index) and one image output (and optionally group "
                                 f"probabilities), got {len(inputs)} inputs and {len(outputs)} "
                                 "outputs")
        self._input, self._output = images[0], image_outputs[0]
        self.probabilities_output = probabilities[0] if probabilities else None
        self.group_input = groups[0] if groups else None
        self.group_index = 0
        self.image_size = _square_size(tuple(self._input["shape"]), path)
        for details in (self._input, self._output):
            _check_dtype(np.dtype(details["dtype"]), path)

    def __call__(self, batch):
        """Invoke once per image; returns float32 (B, S, S, 3) in [-1, 1]."""
        return self.run_routed(batch)[0]

    def run_routed(self, batch):
        """(cartoons, (B, G) group probabilities or None), invoking once per image."""
        results, probabilities = [], []
        for image in batch:
            encoded = _encode(image[None], np.dtype(self._input["dtype"]), self._input["quantization"])
            self._interpreter.set_tensor(self._input["index"], encoded)
            if self.group_input is not None:
                self._interpreter.set_tensor(self.group_input["index"],
                                             np.array([self.group_index], np.int32))
            self._interpreter.invoke()
            output = self._interpreter.get_tensor(self._output["index"])
            results.append(_decode(output, self._output["quantization"]))
            if self.probabilities_output is not None:
                probabilities.append(self._interpreter.get_tensor(
                    self.probabilities_output["index"]).astype(np.float32))
        return (np.concatenate(results, axis=0),
                np.concatenate(probabilities, axis=0) if probabilities else None)


def _split_outputs(outputs, shape_of):
    """(image outputs, probability outputs) of a model: rank-4 tensors and rank-2 ones.

    Raises ModelLoadError unless there is exactly one image output and at most one
    probability output.
    """
    images = [o for o in outputs if len(shape_of(o)) == 4]
    probabilities = [o for o in outputs if len(shape_of(o)) == 2]
    if len(images) != 1 or len(probabilities) > 1 or len(images) + len(probabilities) != len(outputs):
        raise ModelLoadError(f"expected one image output (B, S, S, 3) and optionally one group "
                             f"probabilities output (B, G), got output shapes "
                             f"{[list(shape_of(o)) for o in outputs]}")
    return images, probabilities


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
        if len(inputs) != 1:
            raise ModelLoadError(f"model {path}: expected one image input, got {len(inputs)} inputs")
        try:
            image_outputs, probabilities = _split_outputs(outputs, lambda o: o.shape)
        except ModelLoadError as error:
            raise ModelLoadError(f"model {path}: {error}") from None
        self._input, self._output = inputs[0], image_outputs[0]
        self.probabilities_output = probabilities[0] if probabilities else None
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
        return self.run_routed(batch)[0]

    def run_routed(self, batch):
        """(cartoons, (B, G) group probabilities or None) of the batch."""
        names = [self._output.name]
        if self.probabilities_output is not None:
            names.append(self.probabilities_output.name)

        def run(chunk):
            feed = {self._input.name: _encode(chunk, self._dtype, (0.0, 0))}
            outputs = self._session.run(names, feed)
            if outputs[0].shape != chunk.shape:
                raise ValueError(f"the model returned shape {outputs[0].shape} for a batch of "
                                 f"{chunk.shape}; expected the same shape")
            # one array (B, S, S, 3 + G) so that run_in_batches pads and splits both alike
            flat = [_decode(outputs[0], (0.0, 0)).reshape(len(chunk), -1)]
            flat += [np.asarray(o, np.float32) for o in outputs[1:]]
            return np.concatenate(flat, axis=1)

        joined = run_in_batches(run, batch, self._batch)
        pixels = int(np.prod(batch.shape[1:]))
        cartoons = joined[:, :pixels].reshape(batch.shape)
        return cartoons, (joined[:, pixels:] if self.probabilities_output is not None else None)


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
