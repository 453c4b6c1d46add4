"""Dataset layout and the tf.data pipeline of both training stages.

Layout: ``DIR/<group>/photos`` and ``DIR/<group>/cartoons``, one pair of folders per
group (as ``../shared/data/fourgroups``). For the base stage, a ``DIR`` that directly
holds ``photos/`` and ``cartoons/`` is the base group (as ``../shared/data/p2c/train``).
Photos and cartoons are unpaired, unless the config says ``data.paired``: then a photo and
a cartoon with the same file name are one pair, drawn and augmented together.

The pipeline is a pure function of (seed, step): the files of step ``s`` and their
augmentation are fixed, so a resumed run sees exactly the data it would have seen.
"""

import dataclasses
import logging
import zlib
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DOMAINS = ("photos", "cartoons")


class DatasetError(ValueError):
    """The data folder does not hold what the run needs; the message says what."""


@dataclasses.dataclass
class GroupFiles:
    photos: list
    cartoons: list


def image_files(folder):
    """Sorted paths (str) of the image files directly in ``folder``."""
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _group_dir(data_dir, group, base_group):
    """The folder holding ``photos/`` and ``cartoons/`` for ``group``."""
    data_dir = Path(data_dir)
    nested = data_dir / group
    if nested.is_dir():
        return nested
    if group == base_group and all((data_dir / d).is_dir() for d in DOMAINS):
        return data_dir
    raise DatasetError(
        f"no folder for group {group!r} in {str(data_dir)!r}: expected "
        f"{str(nested)}/photos and {str(nested)}/cartoons"
        + (f" (or {str(data_dir)}/photos and /cartoons for the base group)"
           if group == base_group else ""))


def is_readable(path):
    """True when TensorFlow decodes ``path`` as an RGB image."""
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        return False
    return True


def discover(data_dir, groups, base_group, check_files=True):
    """Find every group's photos and cartoons; unreadable files are reported and dropped.

    Raises DatasetError before any training when a folder is missing or ends up empty.
    """
    if not Path(data_dir).is_dir():
        raise DatasetError(f"data folder {str(data_dir)!r} does not exist")
    found = {}
    for group in groups:
        folder = _group_dir(data_dir, group, base_group)
        lists = {}
        for domain in DOMAINS:
            sub = folder / domain
            if not sub.is_dir():
                raise DatasetError(f"group {group!r}: missing folder {str(sub)!r}")
            files = image_files(sub)
            if check_files:
                bad = [f for f in files if not is_readable(f)]
                for path in bad:
                    log.warning("skipping unreadable image %s", path)
                files = [f for f in files if f not in set(bad)]
            if not files:
                raise DatasetError(
                    f"group {group!r}: no readable images ({', '.join(IMAGE_EXTENSIONS)}) "
                    f"in {str(sub)!r}")
            lists[domain] = files
        found[group] = GroupFiles(**lists)
    return found


def pair_files(files, group):
    """Keep ``files`` (GroupFiles) as aligned pairs: photo i and cartoon i share a stem.

    Raises DatasetError naming the unmatched files when any photo or cartoon lacks its
    partner (a folder that is not paired at all fails the same way).
    """
    photos = {Path(p).stem: p for p in files.photos}
    cartoons = {Path(c).stem: c for c in files.cartoons}
    lonely = sorted(set(photos) ^ set(cartoons))
    if lonely:
        names = [photos.get(stem) or cartoons.get(stem) for stem in lonely]
        shown = ", ".join(Path(n).name for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise DatasetError(
            f"group {group!r}: data.paired needs a cartoon with the same file name for every "
            f"photo and the reverse; {len(names)} files have no partner: {shown}{more}")
    stems = sorted(photos)
    return GroupFiles(photos=[photos[s] for s in stems], cartoons=[cartoons[s] for s in stems])


def is_held_out(path, fraction):
    """True when ``path`` belongs to the held-out split (a hash of its file stem)."""
    return zlib.crc32(Path(path).stem.encode()) % 10_000 < round(fraction * 10_000)


def split_holdout(files, fraction):
    """(training, held-out) GroupFiles; a photo and its cartoon land on the same side."""
    def part(keep):
        return GroupFiles(
            photos=[p for p in files.photos if is_held_out(p, fraction) != keep],
            cartoons=[c for c in files.cartoons if is_held_out(c, fraction) != keep])
    return part(True), part(False)


def _stream_seed(seed, group, domain):
    return [seed, zlib.crc32(f"{group}/{domain}".encode())]


def _pick(paths, seed, position):
    """File at ``position`` of an endless stream of per-epoch shuffles of ``paths``."""
    count = tf.cast(tf.shape(paths)[0], tf.int64)
    epoch = position // count
    order = tf.random.experimental.stateless_shuffle(
        tf.range(count), seed=tf.stack([tf.cast(seed[0], tf.int64) + epoch,
                                        tf.cast(seed[1], tf.int64)]))
    return tf.gather(paths, order[position % count])


def load_image(path, image_size, resize, flip, seed):
    """Decode, flip, resize to ``resize``, random-crop ``image_size``, scale to [-1, 1]."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.convert_image_dtype(image, tf.float32)
    image.set_shape([None, None, 3])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed)
    image = tf.image.resize(image, [resize, resize], method="bilinear")
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=seed + 1)
    return image * 2.0 - 1.0


def training_dataset(files, slots, config, start_step=0, end_step=None):
    """Batches from ``start_step`` to ``end_step`` (default ``config.train.steps``).

    Args:
        files: {group: GroupFiles} from ``discover``.
        slots: group index of each sample in a batch, e.g. [0] * batch for the base stage
            or [0, 1, 2, 3] for the few-shot stage.
        config: the run's Config.
    Returns a dataset of {"photo", "cartoon": (B, S, S, 3) float32, "group": (B,) int32}.
    """
    seed = config.train.seed
    groups = config.groups
    paired = config.data.paired
    size, resize, flip = config.model.image_size, config.data.resize, config.data.flip
    tables = {g: {d: tf.constant(getattr(files[groups[g]], d)) for d in DOMAINS}
              for g in sorted(set(slots))}
    # Position of each slot within its group's stream at step s: s * per_group + k.
    per_group = {g: slots.count(g) for g in set(slots)}
    rank = [slots[:i].count(g) for i, g in enumerate(slots)]

    def load_step(step):
        batch = {"photo": [], "cartoon": []}
        for index, (group, k) in enumerate(zip(slots, rank)):
            position = step * per_group[group] + k
            for domain, key in zip(DOMAINS, ("photo", "cartoon")):
                # A pair shares its draw (the photo stream) and its augmentation.
                stream = DOMAINS[0] if paired else domain
                path = _pick(tables[group][domain],
                             _stream_seed(seed, groups[group], stream), position)
                side = 0 if paired else int(key == "cartoon")
                aug_seed = tf.stack([tf.cast(seed, tf.int64) * 7919 + step,
                                     tf.constant(index * 2 + side, tf.int64)])
                batch[key].append(load_image(path, size, resize, flip, aug_seed))
        return {"photo": tf.stack(batch["photo"]), "cartoon": tf.stack(batch["cartoon"]),
                "group": tf.constant(slots, tf.int32)}

    end_step = config.train.steps if end_step is None else end_step
    dataset = tf.data.Dataset.range(start_step, end_step)
    dataset = dataset.map(load_step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
