"""Keras callbacks of a training run: progress, stats, image grids, checkpoints, NaN guard.

Keras counts epochs; a run counts steps. Every callback here gets the global step
from ``StepCounter``: one Keras epoch is ``log_every`` steps, starting at the step
the run resumed from.
"""

import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfcartoon.training.checkpoints import save_checkpoint


class StepCounter:
    """Global step shared by the callbacks of one run."""

    def __init__(self, start_step):
        self.step = start_step


class GlobalStep(keras.callbacks.Callback):
    """Advances the shared step after each batch; must come first in the list."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def on_train_batch_end(self, batch, logs=None):
        self.counter.step += 1


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops the run at the first NaN or Inf loss; later callbacks then save nothing."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.bad_step = None
        self.bad_terms = []

    def on_train_batch_end(self, batch, logs=None):
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad and self.bad_step is None:
            self.bad_step, self.bad_terms = self.counter.step, bad
            self.model.stop_training = True


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over the whole run (steps/s and ETA), losses as postfix."""

    def __init__(self, counter, total_steps, stream=None):
        super().__init__()
        self.counter = counter
        self.total = total_steps
        self.stream = stream or sys.stderr
        self.bar = None

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.total, initial=self.counter.step, unit="step",
                        file=self.stream, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs:
            shown = {k[0]: f"{float(logs[k]):.3f}" for k in ("g_loss", "d_loss") if k in logs}
            self.bar.set_postfix(**shown, refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


class StatsWriter(keras.callbacks.Callback):
    """Every ``log_every`` steps: one JSON line in stats.jsonl and TensorBoard scalars.

    The values are means over the last ``log_every`` steps (the trackers reset each
    Keras epoch, which is ``log_every`` steps long).
    """

    def __init__(self, counter, run_dir, guard):
        super().__init__()
        self.counter = counter
        self.path = Path(run_dir) / "stats.jsonl"
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / "tensorboard"))
        self.guard = guard
        self.started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = (time.perf_counter(), self.counter.step)

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad_step is not None or not logs:
            return
        seconds = time.perf_counter() - self.started[0]
        steps = self.counter.step - self.started[1]
        learning_rate = float(self.model.generator_optimizer.learning_rate)
        record = {"step": self.counter.step, "time": time.time(),
                  "steps_per_sec": steps / seconds if seconds else None,
                  "learning_rate": learning_rate,
                  **{k: float(v) for k, v in logs.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=self.counter.step):
            for key, value in logs.items():
                tf.summary.scalar(f"loss/{key}", float(value))
            tf.summary.scalar("train/learning_rate", learning_rate)
            if record["steps_per_sec"]:
                tf.summary.scalar("train/steps_per_sec", record["steps_per_sec"])
        self.writer.flush()


def image_grid(columns):
    """Stack columns of (B, H, W, 3) images in [-1, 1] into one uint8 grid (rows = B)."""
    rows = [np.concatenate([np.asarray(c[i]) for c in columns], axis=1)
            for i in range(len(columns[0]))]
    grid = np.concatenate(rows, axis=0)
    return np.clip((grid + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


class ImageGrids(keras.callbacks.Callback):
    """Every ``every`` steps: photo | cartoon | reconstruction, and the reverse, to TB."""

    def __init__(self, counter, run_dir, sample, every):
        super().__init__()
        self.counter = counter
        self.sample = sample
        self.every = every
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / "tensorboard"))

    def on_train_batch_end(self, batch, logs=None):
        if self.counter.step % self.every:
            return
        gan, group = self.model, self.sample["group"]
        photo, cartoon = self.sample["photo"], self.sample["cartoon"]
        fake_cartoon = gan.photo2cartoon({"image": photo, "group": group})["image"]
        recon_photo = gan.cartoon2photo({"image": fake_cartoon, "group": group})["image"]
        fake_photo = gan.cartoon2photo({"image": cartoon, "group": group})["image"]
        recon_cartoon = gan.photo2cartoon({"image": fake_photo, "group": group})["image"]
        with self.writer.as_default(step=self.counter.step):
            tf.summary.image("photo_to_cartoon", image_grid(
                [photo, fake_cartoon, recon_photo])[None])
            tf.summary.image("cartoon_to_photo", image_grid(
                [cartoon, fake_photo, recon_cartoon])[None])
        self.writer.flush()


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint every ``every`` steps and at the end, unless the guard fired."""

    def __init__(self, counter, run_dir, every, keep, guard):
        super().__init__()
        self.counter = counter
        self.run_dir = run_dir
        self.every = every
        self.keep = keep
        self.guard = guard
        self.last_saved = counter.step

    def _save(self):
        if self.guard.bad_step is None and self.counter.step != self.last_saved:
            save_checkpoint(self.run_dir, self.model, self.counter.step, self.keep)
            self.last_saved = self.counter.step

    def on_epoch_end(self, epoch, logs=None):
        if self.counter.step % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        self._save()
