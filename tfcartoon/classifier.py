"""Train and load the group classifier behind ``--group auto``.

    python -m tfcartoon.classifier --model RUN_DIR --data DATA_DIR
    python -m tfcartoon.classifier --config CONFIG.yaml --data DATA_DIR --out FILE.keras

The groups, their order and the settings (``routing`` in the config: threshold, size,
epochs...) come from the run's ``config.yaml`` (or ``--config``; ``--set
routing.KEY=VALUE`` overrides). Each group's ``photos/`` folder in DATA_DIR, laid out
as for training, gives that group's labelled faces: crops as ``python -m
tfcartoon.prepare`` makes them, because those are what ``cartoonize`` feeds it. Evaluation uses each group's
``val/photos/`` when it has one, else ``routing.holdout`` of its photos kept out by a
hash of the file name. A run that gained a group (``--group firefighters``) gets a
classifier that knows it by running the same command again with ``--overwrite``.

Writes ``RUN_DIR/group_classifier.keras`` (or ``--out``) and its card
``group_classifier.json`` beside it: groups, threshold, accuracy per group and the
confusion matrix on the evaluation photos. An existing classifier is kept unless
``--overwrite``. Unreadable photos are reported and skipped.
"""

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tfcartoon.config import ConfigError, load_config

log = logging.getLogger(__name__)

CLASSIFIER_FILE = "group_classifier.keras"
DOMAIN = "photos"
VAL_FOLDER = "val"


class ClassifierError(ValueError):
    """A group classifier is missing, unreadable, or does not fit the model it routes for."""


@dataclasses.dataclass
class Route:
    """Where one face went: the group that drew it and the classifier's top probability."""

    group: str
    probability: float
    predicted: str
    fallback: bool

    def label(self):
        """'elderly:0.93', or 'young_women:0.41(fallback from kids)'."""
        text = f"{self.group}:{self.probability:.2f}"
        return f"{text}(fallback from {self.predicted})" if self.fallback else text


def routes_from_probabilities(probabilities, groups, threshold):
    """One ``Route`` per row of (B, G) probabilities (``route_index``, base = groups[0])."""
    from tfcartoon.models.group_classifier import route_index

    probabilities = np.asarray(probabilities, np.float32)
    index, confidence, fallback = route_index(probabilities, threshold)
    predicted = probabilities.argmax(axis=-1)
    return [Route(groups[i], float(c), groups[p], bool(f))
            for i, c, p, f in zip(index, confidence, predicted, fallback)]


class GroupClassifier:
    """A trained group classifier with its groups and fallback threshold.

    Attributes:
        model: Keras model (B, S, S, 3) in [-1, 1] -> (B, G) probabilities.
        groups: the groups, in the order of the probabilities (base group first).
        threshold: below this top probability a face falls back to ``groups[0]``.
        card: the figures written when it was trained.
        source: the file it was loaded from.
    """

    def __init__(self, model, groups, threshold, card, source):
        self.model, self.groups, self.threshold = model, list(groups), float(threshold)
        self.card, self.source = card, str(source)
        self._predict = None

    @property
    def image_size(self):
        return int(self.model.input.shape[1])

    def probabilities(self, batch):
        """(B, G) float32 probabilities of a float32 (B, S, S, 3) batch in [-1, 1]."""
        import tensorflow as tf

        batch = np.asarray(batch, np.float32)
        if len(batch) == 0:
            return np.zeros((0, len(self.groups)), np.float32)
        if self._predict is None:
            spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
            self._predict = tf.function(lambda x: self.model(x, training=False),
                                        input_signature=[spec])
        return self._predict(batch).numpy()

    def route(self, batch):
        """One ``Route`` per face of the batch."""
        return routes_from_probabilities(self.probabilities(batch), self.groups, self.threshold)

    def __repr__(self):
        return (f"GroupClassifier({self.source!r}, groups={self.groups}, "
                f"threshold={self.threshold})")


def card_path(path):
    """The card beside a classifier file: ``group_classifier.keras`` -> ``group_classifier.json``."""
    return Path(path).with_suffix(".json")


def default_path(model_path):
    """``RUN_DIR/group_classifier.keras`` for a run directory, else None."""
    if model_path is None:
        return None
    path = Path(str(model_path))
    return path / CLASSIFIER_FILE if path.is_dir() else None


def retrain_hint(model_path=None):
    target = model_path if model_path is not None else "RUN_DIR"
    return f"python -m tfcartoon.classifier --model {target} --data DATA_DIR"


def load_group_classifier(path, groups=None, image_size=None):
    """Load the classifier at ``path`` (and its card), for faces of side ``image_size``.

    Args:
        path: a ``.keras`` file written by ``train_classifier``.
        groups: the model's groups; they must be the classifier's, in the same order.
        image_size: side of the faces it will read (default: its own input size).

    Raises:
        ClassifierError: missing or unreadable file or card, other groups, or a face
            size that is not a multiple of its input size.
    """
    import keras

    from tfcartoon.models.group_classifier import resized

    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"group classifier {path}: no such file; train one with "
                              f"{retrain_hint()}")
    try:
        card = json.loads(card_path(path).read_text(encoding="utf-8"))
        own_groups, threshold = list(card["groups"]), float(card["threshold"])
        input_size = int(card["input_size"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ClassifierError(f"group classifier {path}: its card {card_path(path).name} is "
                              f"missing or unreadable ({error}); retrain it") from None
    if groups is not None and list(groups) != own_groups:
        raise ClassifierError(f"group classifier {path} knows the groups {own_groups}, the model "
                              f"has {list(groups)}; retrain it for these groups: "
                              f"{retrain_hint()} --overwrite")
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ClassifierError(f"group classifier {path}: cannot load it ({error})") from None
    shape = (tuple(model.input.shape[1:]), model.output.shape[-1])
    if shape != ((input_size, input_size, 3), len(own_groups)):
        raise ClassifierError(f"group classifier {path}: the model takes {shape[0]} and gives "
                              f"{shape[1]} probabilities, its card says {input_size} px and "
                              f"{len(own_groups)} groups; retrain it")
    if image_size is not None and image_size != int(model.input.shape[1]):
        if image_size % input_size:
            raise ClassifierError(f"group classifier {path}: reads faces whose side is a multiple "
                                  f"of {input_size}, the model's is {image_size}")
        model = resized(model, image_size, input_size)
    return GroupClassifier(model, own_groups, threshold, card, path)


# === Data ===

def labelled_photos(data_dir, groups, base_group, holdout):
    """(training, evaluation, how) lists of (path, group index) from each group's photos.

    Evaluation photos are ``<group>/val/photos`` where it exists, else the
    ``holdout`` fraction of the group's photos picked by a hash of the file name.
    """
    from tfcartoon.data.dataset import DatasetError, _group_dir, image_files, is_held_out

    train, evaluation, sources = [], [], set()
    for label, group in enumerate(groups):
        folder = _group_dir(data_dir, group, base_group)
        photos_dir = folder / DOMAIN
        if not photos_dir.is_dir():
            raise DatasetError(f"group {group!r}: missing folder {str(photos_dir)!r}")
        photos = image_files(photos_dir)
        val_dir = folder / VAL_FOLDER / DOMAIN
        if val_dir.is_dir():
            held_out, sources = image_files(val_dir), sources | {f"{VAL_FOLDER}/{DOMAIN}"}
        else:
            held_out = [p for p in photos if is_held_out(p, holdout)]
            photos = [p for p in photos if not is_held_out(p, holdout)]
            sources.add(f"holdout {holdout:g} of photos/")
        if not photos:
            raise DatasetError(f"group {group!r}: no training photos in {str(photos_dir)!r}")
        train += [(p, label) for p in photos]
        evaluation += [(p, label) for p in held_out]
    return train, evaluation, " + ".join(sorted(sources))


def load_faces(items, size):
    """(float32 (N, size, size, 3) in [-1, 1], labels, skipped paths) of (path, label) items.

    Faces are resized with area averaging (the classifier's own pooling on square
    crops whose side is a multiple of ``size``). Unreadable files are logged and skipped.
    """
    import cv2

    from tfcartoon.data.images import ImageReadError, read_image

    faces, labels, skipped = [], [], []
    for path, label in items:
        try:
            image = read_image(path, min_side=1)
        except ImageReadError as error:
            log.warning("skipping unreadable photo %s: %s", path, error.reason)
            skipped.append(str(path))
            continue
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        faces.append(image.astype(np.float32) / 127.5 - 1.0)
        labels.append(label)
    faces = np.stack(faces) if faces else np.zeros((0, size, size, 3), np.float32)
    return faces, np.asarray(labels, np.int32), skipped


# === Training ===

def augmentation(seed):
    """Random flips, shifts, zooms, contrast and brightness for training faces in [-1, 1]."""
    import keras

    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(0.06, 0.06, fill_mode="nearest", seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
        layers.RandomContrast(0.2, value_range=(-1.0, 1.0), seed=seed + 3),
        layers.RandomBrightness(0.15, value_range=(-1.0, 1.0), seed=seed + 4),
    ], name="augmentation")


def class_weights(labels, count):
    """Weights that give every group the same total weight, whatever its number of photos."""
    counts = np.bincount(labels, minlength=count)
    return {g: len(labels) / (count * n) if n else 0.0 for g, n in enumerate(counts)}


def figures(probabilities, labels, groups, threshold):
    """Accuracy (overall, per group), confusion matrix and fallbacks of predictions."""
    from tfcartoon.models.group_classifier import route_index

    labels = np.asarray(labels)
    predicted = np.asarray(probabilities).argmax(axis=-1)
    routed, _, fallback = route_index(probabilities, threshold)
    confusion = np.zeros((len(groups), len(groups)), int)
    for true, guess in zip(labels, predicted):
        confusion[true, guess] += 1
    per_group = {group: (float((predicted[labels == g] == g).mean())
                         if (labels == g).any() else None) for g, group in enumerate(groups)}
    return {
        "images": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else None,
        "per_group_accuracy": per_group,
        "confusion": {"rows_true_columns_predicted": groups, "counts": confusion.tolist()},
        "routed_accuracy": float((routed == labels).mean()) if len(labels) else None,
        "fallbacks": int(fallback.sum()),
    }


def train_classifier(config, data_dir, out_path, overwrite=False):
    """Train the group classifier of ``config`` on ``data_dir``; write it and its card.

    Returns the card (a dict). Raises FileExistsError (nothing written) when the file
    or its card exists and not ``overwrite``.
    """
    import keras
    import tensorflow as tf

    from tfcartoon import __version__
    from tfcartoon.models.group_classifier import build_group_classifier

    out_path, routing, groups = Path(out_path), config.routing, list(config.groups)
    if out_path.suffix != ".keras":
        raise ClassifierError(f"--out {out_path}: the classifier file must end in .keras")
    for target in (out_path, card_path(out_path)):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    if len(groups) < 2:
        raise ClassifierError(f"routing needs at least two groups, the config has {groups}")
    if config.model.image_size % routing.input_size:
        raise ClassifierError(f"routing.input_size ({routing.input_size}) must divide "
                              f"model.image_size ({config.model.image_size}): the classifier "
                              "average-pools the model's faces to it")
    train_items, eval_items, eval_source = labelled_photos(
        data_dir, groups, config.base_group, routing.holdout)
    size = routing.input_size
    x, y, skipped = load_faces(train_items, size)
    x_eval, y_eval, skipped_eval = load_faces(eval_items, size)
    missing = [g for i, g in enumerate(groups) if not (y == i).any()]
    if missing:
        raise ClassifierError(f"no readable training photos for {missing} in {data_dir}")

    keras.utils.set_random_seed(routing.seed)
    model = build_group_classifier(groups, size, size, routing.width)
    steps = routing.epochs * -(-len(x) // routing.batch_size)
    model.compile(optimizer=keras.optimizers.Adam(
                      keras.optimizers.schedules.CosineDecay(routing.lr, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    augment = augmentation(routing.seed)
    data = (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=routing.seed, reshuffle_each_iteration=True)
            .batch(routing.batch_size)
            .map(lambda images, labels: (augment(images, training=True), labels)))
    log.info("training the group classifier on %d photos (%s), evaluating on %d (%s)",
             len(x), ", ".join(f"{g}: {int((y == i).sum())}" for i, g in enumerate(groups)),
             len(x_eval), eval_source)
    history = model.fit(data, epochs=routing.epochs, class_weight=class_weights(y, len(groups)),
                        verbose=0, shuffle=False)  # the dataset shuffles (seeded)
    final = {key: float(values[-1]) for key, values in history.history.items()}
    result = figures(model.predict(x_eval, verbose=0) if len(x_eval) else
                     np.zeros((0, len(groups))), y_eval, groups, routing.threshold)
    card = {
        "groups": groups,
        "base_group": config.base_group,
        "threshold": routing.threshold,
        "input_size": size,
        "width": routing.width,
        "params": int(model.count_params()),
        "trained_on": {g: int((y == i).sum()) for i, g in enumerate(groups)},
        "evaluated_on": {g: int((y_eval == i).sum()) for i, g in enumerate(groups)},
        "evaluation_photos": eval_source,
        "skipped_unreadable": skipped + skipped_eval,
        "evaluation": result,
        "final_training": final,
        "routing": dataclasses.asdict(routing),
        "data": str(data_dir),
        "tfcartoon_version": __version__,
    }
    _write_classifier(model, card, out_path)
    return card


def _write_classifier(model, card, out_path):
    """Write the model, then its card, each by an atomic rename (Keras wants a .keras name)."""
    from tfcartoon.data.images import atomic_output

    out_path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        temp = Path(folder) / out_path.name
        model.save(temp)
        os.replace(temp, out_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with atomic_output(card_path(out_path)) as temp_name:
        Path(temp_name).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def summary(card):
    """A few lines on the classifier's held-out figures."""
    result, groups = card["evaluation"], card["groups"]
    if not result["images"]:
        return "no evaluation photos: accuracy unknown"
    lines = [f"accuracy {result['accuracy']:.1%} on {result['images']} held-out photos "
             f"({card['evaluation_photos']}); routed (threshold {card['threshold']:g}) "
             f"{result['routed_accuracy']:.1%}, {result['fallbacks']} fallbacks"]
    for group in groups:
        value = result["per_group_accuracy"][group]
        lines.append(f"  {group}: {'n/a' if value is None else f'{value:.1%}'}")
    counts = result["confusion"]["counts"]
    width = max(len(g) for g in groups)
    lines.append("  confusion (rows true, columns predicted): " + " ".join(groups))
    lines += [f"  {g:>{width}} " + " ".join(f"{c:>{len(h)}}" for c, h in zip(row, groups))
              for g, row in zip(groups, counts)]
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point; returns the exit status (2 for bad arguments or data)."""
    parser = argparse.ArgumentParser(
        prog="python -m tfcartoon.classifier",
        description="Train the group classifier that routes each face to its branch "
                    "(--group auto), for the groups of a run or config.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="run directory: its config's groups; the "
                        f"classifier goes to RUN_DIR/{CLASSIFIER_FILE}")
    source.add_argument("--config", type=Path, help="YAML config naming the groups (needs --out)")
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset folder laid out as for training (<group>/photos/, "
                             "optionally <group>/val/photos/ for evaluation)")
    parser.add_argument("--out", type=Path, help=f"classifier file (.keras; default RUN_DIR/"
                        f"{CLASSIFIER_FILE})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. routing.epochs=100")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing classifier and its card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tfcartoon.data.dataset import DatasetError
    from tfcartoon.training.run import TrainingError, read_run_config

    try:
        if args.model is not None:
            config = load_config(None, args.set, base=read_run_config(args.model))
        else:
            config = load_config(args.config, args.set)
        out = args.out or default_path(args.model)
        if out is None:
            raise ClassifierError("--out is required with --config")
        card = train_classifier(config, args.data, out, overwrite=args.overwrite)
    except (ConfigError, DatasetError, TrainingError, ClassifierError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(card))
    print(f"wrote {out} and {card_path(out).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
