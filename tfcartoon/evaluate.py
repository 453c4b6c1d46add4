"""Evaluate a trained run per group on held-out photos.

    python -m tfcartoon.evaluate --model RUN --data DIR --out REPORT_DIR

For each group, the group's branch cartoonizes ``DIR/<group>/val/photos`` and the
report gives:

- identity: cosine of face-ID embeddings, photo vs its cartoon (higher is better);
- L1, PSNR, SSIM against the paired reference cartoon ``DIR/<group>/val/cartoons/<same
  file name>`` when there is one (on the [0, 1] scale);
- group agreement: share of cartoons that the judge run's cartoon discriminators
  (global and local) classify as the intended group, next to the same share on the
  real reference cartoons (the judge's own accuracy; a judge that cannot tell real
  cartoons apart makes this column meaningless);
- KID between our cartoons and every real cartoon of the group (``cartoons/`` and
  ``val/cartoons/``), on features of a pluggable extractor: the face-ID embedder by
  default, InceptionV3 when the user passes its weights file (nothing is downloaded).

A base-stage run trains only the base branch, so it is evaluated with that branch for
every group (the paper's "Basic" and Baseline1-3); ``--branch`` forces one branch.

Writes ``report.md``, ``report.json`` and ``grids/<group>.png`` (rows of photo,
cartoon, reference). Unreadable images are reported and skipped.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
JUDGE_DISCRIMINATORS = ("cartoon_global", "cartoon_local")
KID_DEGREE = 3


class EvaluationError(ValueError):
    """The model, data or options cannot be evaluated; the message says which and why."""


# === metrics ===================================================================

def kid(real_features, fake_features):
    """Kernel Inception Distance: unbiased MMD^2 with the kernel (x.y / d + 1)^3.

    Args:
        real_features, fake_features: (N, d) and (M, d) arrays, N, M >= 2.
    Returns the unbiased estimate (can be slightly negative for equal distributions).
    """
    x = np.asarray(real_features, np.float64)
    y = np.asarray(fake_features, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"kid: expected (N, d) and (M, d) features, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"kid: needs at least 2 samples on each side, got {len(x)} and {len(y)}")
    d = x.shape[1]

    def kernel(a, b):
        return (a @ b.T / d + 1.0) ** KID_DEGREE

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    term_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def paired_scores(cartoons, references):
    """Per-image L1, PSNR (dB) and SSIM of [-1, 1] images, measured on the [0, 1] scale."""
    import tensorflow as tf

    a = (np.asarray(cartoons, np.float32) + 1.0) / 2.0
    b = (np.asarray(references, np.float32) + 1.0) / 2.0
    l1 = np.abs(a - b).mean(axis=(1, 2, 3))
    psnr = tf.image.psnr(a, b, max_val=1.0).numpy()
    ssim = tf.image.ssim(a, b, max_val=1.0).numpy()
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


# === feature extractors for KID =================================================

def face_id_features(embedder):
    """KID features: L2-normalised face-ID embeddings of [-1, 1] aligned faces."""
    from tfcartoon.models import face_id

    def extract(images):
        chunks = [np.asarray(face_id.face_embedding(embedder, images[i:i + 16]))
                  for i in range(0, len(images), 16)]
        features = np.concatenate(chunks)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    extract.name = "face-ID embedder"
    return extract


def inception_features(weights_path):
    """KID features: InceptionV3 pool features; ``weights_path`` is a no-top weights file."""
    import keras

    path = Path(weights_path)
    if not path.is_file():
        raise EvaluationError(f"--inception-weights {str(path)!r} does not exist (expected the "
                              "InceptionV3 no-top .h5/.weights.h5 file)")
    model = keras.applications.InceptionV3(include_top=False, weights=str(path), pooling="avg")

    def extract(images):
        resized = keras.ops.image.resize(np.asarray(images, np.float32), (299, 299))
        return np.asarray(model.predict(resized, batch_size=16, verbose=0))  # expects [-1, 1]

    extract.name = "InceptionV3 pool features"
    return extract


# === data =======================================================================

@dataclasses.dataclass
class GroupData:
    names: list
    photos: np.ndarray            # (N, S, S, 3) in [-1, 1]
    references: dict              # name -> (S, S, 3) paired reference cartoon
    real_cartoons: np.ndarray     # every real cartoon of the group, for KID
    skipped: list                 # "path: reason" of unreadable files


def _read_folder(folder, size, skipped):
    """{file name: [-1, 1] image resized to ``size``}; unreadable files go to ``skipped``."""
    import cv2

    from tfcartoon.data.dataset import image_files
    from tfcartoon.data.images import ImageReadError, read_image

    images = {}
    if not Path(folder).is_dir():
        return images
    for path in map(Path, image_files(folder)):
        try:
            rgb = read_image(path)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            skipped.append(str(error))
            continue
        if rgb.shape[:2] != (size, size):
            interpolation = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (size, size), interpolation=interpolation)
        images[path.name] = rgb.astype(np.float32) / 127.5 - 1.0
    return images


def load_group_data(data_dir, group, size):
    """Held-out photos, paired references and all real cartoons of ``group``."""
    folder = Path(data_dir) / group
    val_photos = folder / "val" / "photos"
    if not val_photos.is_dir():
        raise EvaluationError(f"group {group!r}: no held-out photos; expected the folder "
                              f"{val_photos} (and optionally {folder / 'val' / 'cartoons'})")
    skipped = []
    photos = _read_folder(val_photos, size, skipped)
    if not photos:
        raise EvaluationError(f"group {group!r}: no readable images in {val_photos}")
    references = _read_folder(folder / "val" / "cartoons", size, skipped)
    train_cartoons = _read_folder(folder / "cartoons", size, skipped)
    real = list(references.values()) + list(train_cartoons.values())
    names = sorted(photos)
    return GroupData(names=names, photos=np.stack([photos[n] for n in names]),
                     references={n: references[n] for n in names if n in references},
                     real_cartoons=np.stack(real) if real else np.zeros((0, size, size, 3)),
                     skipped=skipped)


# === judge ======================================================================

def load_judge(run_dir):
    """The cartoon discriminators of a run, float32, from its latest checkpoint."""
    from tfcartoon.models.discriminator import build_discriminator
    from tfcartoon.precision import dtype_policy
    from tfcartoon.training.checkpoints import restore_weights
    from tfcartoon.training.run import latest_state

    config, checkpoint, state = latest_state(run_dir)
    judges = {}
    with dtype_policy("float32"):
        for name in JUDGE_DISCRIMINATORS:
            kind = name.split("_")[1]
            layers = config.model.global_layers if kind == "global" else config.model.local_layers
            disc = build_discriminator(kind, config.groups, config.model.ndf,
                                       config.model.image_size, n_layers=layers, name=name)
            restore_weights(disc, state, name, str(checkpoint))
            judges[name] = disc
    return config, judges


def group_votes(judges, images, index):
    """Share of ``images`` each judge classifies as group ``index`` (and their mean)."""
    votes = {}
    for name, disc in judges.items():
        logits = np.asarray(disc.predict(np.asarray(images, np.float32), batch_size=8,
                                         verbose=0)["group_logit"])
        votes[name] = float(np.mean(np.argmax(logits, axis=1) == index))
    votes["mean"] = float(np.mean(list(votes.values())))
    return votes


# === grids ======================================================================

def grid(photos, cartoons, references):
    """uint8 image: one row per photo, columns photo | cartoon | reference (grey if none)."""
    rows = []
    for photo, cartoon, reference in zip(photos, cartoons, references):
        if reference is None:
            reference = np.zeros_like(photo)
        rows.append(np.concatenate([photo, cartoon, reference], axis=1))
    image = np.concatenate(rows, axis=0)
    return np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


# === evaluation =================================================================

def _branches(run, groups, branch):
    config = run.config
    if branch is not None:
        if branch not in config.groups:
            raise EvaluationError(f"--branch {branch!r} is not one of the run's groups "
                                  f"{config.groups}")
        return {g: branch for g in groups}, f"--branch {branch}"
    if config.train.stage == "base":
        return ({g: config.base_group for g in groups},
                f"base-stage run: only the {config.base_group} branch is trained, used for "
                "every group")
    return {g: g for g in groups}, "each group's own branch"


def _mean(values):
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def evaluate(model, data, out, groups=None, branch=None, judge=None, features=None,
             face_id_model=None, overwrite=False):
    """Evaluate run ``model`` on ``data``; write the report into ``out``; return it as a dict.

    Args:
        model: run directory (``python -m tfcartoon.train --out``).
        data: dataset folder with ``<group>/val/photos`` (and ``val/cartoons`` pairs).
        out: report folder; must be empty or absent unless ``overwrite``.
        groups: groups to evaluate (default: all of the run's groups).
        branch: use this branch for every group (default: see module doc).
        judge: run whose cartoon discriminators classify groups (default: ``model``).
        features: callable images -> (N, d) features for KID (default: face-ID).
        face_id_model: face-ID embedder file (default: the run's ``face_id.model``,
            else the shared one).
    """
    from tfcartoon.data.images import write_image
    from tfcartoon.models import face_id
    from tfcartoon.training.run import load as load_run

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EvaluationError(f"report folder {str(out)!r} is not empty; pass --overwrite to "
                              "replace its report, or choose another --out")
    if not Path(data).is_dir():
        raise EvaluationError(f"data folder {str(data)!r} does not exist")
    run = _load_run(load_run, model)
    config = run.config
    groups = list(groups) if groups else list(config.groups)
    unknown = [g for g in groups if g not in config.groups]
    if unknown:
        raise EvaluationError(f"--groups {unknown} not in the run's groups {config.groups}")
    branches, branch_note = _branches(run, groups, branch)

    embedder = face_id.load_face_embedder(str(_face_id_path(config, face_id_model)))
    extract = features or face_id_features(embedder)
    judge_dir = judge or model
    judge_config, judges = _load_judge(judge_dir)
    if list(judge_config.groups) != list(config.groups):
        raise EvaluationError(f"judge run {str(judge_dir)!r} has groups {judge_config.groups}, "
                              f"the model has {config.groups}")
    size = config.model.image_size

    report = {"model": str(model), "checkpoint": str(run.checkpoint), "step": run.step,
              "stage": config.train.stage, "update_rule": (config.update_rule
                                                             if config.train.stage == "fewshot"
                                                             else None),
              "data": str(data), "image_size": size, "branches": branch_note,
              "judge": str(judge_dir), "judge_stage": judge_config.train.stage,
              "kid_features": getattr(extract, "name", getattr(extract, "__name__", "custom")),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "groups": {}}
    grids = {}
    for group in groups:
        entry, grids[group] = _evaluate_group(run, group, branches[group], data, size, embedder,
                                              extract, judges, config.groups.index(group))
        report["groups"][group] = entry
        log.info("%s: %s", group, {k: v for k, v in entry.items() if not isinstance(v, (list, dict))})

    out.mkdir(parents=True, exist_ok=True)
    for group, image in grids.items():
        write_image(out / "grids" / f"{group}.png", image, overwrite=True)
    _write_text(out / REPORT_JSON, json.dumps(report, indent=1) + "\n")
    _write_text(out / REPORT_MD, markdown(report))
    return report


def _load_run(load_run, model):
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import TrainingError

    try:
        return load_run(model)
    except (TrainingError, CheckpointError) as error:
        raise EvaluationError(f"--model {str(model)!r}: {error}") from None


def _load_judge(judge_dir):
    from tfcartoon.training.checkpoints import CheckpointError
    from tfcartoon.training.run import TrainingError

    try:
        return load_judge(judge_dir)
    except (TrainingError, CheckpointError) as error:
        raise EvaluationError(f"judge {str(judge_dir)!r}: {error}") from None


def _face_id_path(config, override):
    from tfcartoon.paths import shared_path

    if override:
        path = Path(override)
    elif config.face_id.model and config.face_id.model != "shared":
        path = Path(config.face_id.model)
    else:
        path = shared_path("models", "face_id", "squeezenet_fp32.tflite")
        if path is None:
            raise EvaluationError("no face-ID model: pass --face-id PATH (a face-embedding "
                                  ".tflite or .keras file); the shared one is absent")
    if not path.exists():
        raise EvaluationError(f"face-ID model {str(path)!r} does not exist")
    return path


def _evaluate_group(run, group, branch, data, size, embedder, extract, judges, index):
    from tfcartoon.metrics import identity_similarity

    loaded = load_group_data(data, group, size)
    cartoons = np.asarray(run.photo2cartoon.group_model(branch).predict(
        loaded.photos, batch_size=8, verbose=0), np.float32)
    identity = identity_similarity(loaded.photos, cartoons, embedder=embedder)
    entry = {"branch": branch, "photos": len(loaded.names), "pairs": len(loaded.references),
             "real_cartoons": len(loaded.real_cartoons), "skipped": loaded.skipped,
             "identity": _mean(identity)}
    per_image = {name: {"identity": float(identity[i])} for i, name in enumerate(loaded.names)}
    paired = [i for i, n in enumerate(loaded.names) if n in loaded.references]
    if paired:
        references = np.stack([loaded.references[loaded.names[i]] for i in paired])
        scores = paired_scores(cartoons[paired], references)
        for key, values in scores.items():
            entry[key] = _mean(values)
            for i, value in zip(paired, values):
                per_image[loaded.names[i]][key] = float(value)
        entry["group_agreement_real"] = group_votes(judges, references, index)["mean"]
    else:
        entry.update({"l1": None, "psnr": None, "ssim": None, "group_agreement_real": None})
    votes = group_votes(judges, cartoons, index)
    entry["group_agreement"] = votes["mean"]
    entry["group_agreement_by_judge"] = votes
    if len(loaded.real_cartoons) >= 2 and len(cartoons) >= 2:
        entry["kid"] = kid(extract(loaded.real_cartoons), extract(cartoons))
    else:
        entry["kid"] = None
        log.warning("%s: KID needs 2+ real cartoons and 2+ photos; skipped", group)
    entry["per_image"] = per_image
    references = [loaded.references.get(n) for n in loaded.names]
    return entry, grid(loaded.photos, cartoons, references)


def _write_text(path, text):
    from tfcartoon.data.images import atomic_output

    with atomic_output(path) as temp_name:
        Path(temp_name).write_text(text, encoding="utf-8")


COLUMNS = (("identity", "identity ↑", "{:.3f}"), ("l1", "L1 ↓", "{:.4f}"),
           ("psnr", "PSNR dB ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.3f}"),
           ("group_agreement", "group agr. ↑", "{:.2f}"),
           ("group_agreement_real", "judge on real", "{:.2f}"),
           ("kid", "KID×10³ ↓", "{:.2f}"))


def cell(key, value):
    if value is None:
        return "n/a"
    fmt = dict((k, f) for k, _, f in COLUMNS)[key]
    return fmt.format(value * 1000.0 if key == "kid" else value)


def markdown(report):
    """The report as a Markdown page (one row per group)."""
    lines = [f"# Evaluation of {report['model']}", "",
             f"Checkpoint {report['checkpoint']} (step {report['step']}), stage "
             f"{report['stage']}, {report['image_size']} px; branches: {report['branches']}.",
             f"Data {report['data']}; judge {report['judge']} ({report['judge_stage']} stage); "
             f"KID features: {report['kid_features']}.", "",
             "| group | branch | photos | pairs | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for group, entry in report["groups"].items():
        lines.append(f"| {group} | {entry['branch']} | {entry['photos']} | {entry['pairs']} | "
                     + " | ".join(cell(k, entry.get(k)) for k, _, _ in COLUMNS) + " |")
    skipped = [s for e in report["groups"].values() for s in e["skipped"]]
    if skipped:
        lines += ["", "Skipped (unreadable):"] + [f"- {s}" for s in skipped]
    lines += ["", "Grids: `grids/<group>.png` (photo | cartoon | reference).", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfcartoon.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory to evaluate")
    parser.add_argument("--data", required=True, help="dataset with <group>/val/photos")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--groups", nargs="+", help="groups to evaluate (default: all)")
    parser.add_argument("--branch", help="use this group's branch for every group")
    parser.add_argument("--judge", help="run whose cartoon discriminators judge group "
                        "agreement (default: --model; use one few-shot run to compare methods)")
    parser.add_argument("--face-id", help="face-ID embedder file (default: the run's or shared)")
    parser.add_argument("--kid-features", choices=["face-id", "inception"], default="face-id",
                        help="feature extractor for KID")
    parser.add_argument("--inception-weights", help="InceptionV3 no-top weights file "
                        "(needed for --kid-features inception; nothing is downloaded)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        features = None
        if args.kid_features == "inception":
            if not args.inception_weights:
                raise EvaluationError("--kid-features inception needs --inception-weights PATH")
            features = inception_features(args.inception_weights)
        report = evaluate(args.model, args.data, args.out, groups=args.groups,
                          branch=args.branch, judge=args.judge, features=features,
                          face_id_model=args.face_id, overwrite=args.overwrite)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown(report))
    print(f"report: {Path(args.out) / REPORT_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
