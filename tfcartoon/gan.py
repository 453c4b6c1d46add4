"""The training model: two generators, four discriminators and a custom train_step.

Names follow the data: ``photo2cartoon`` maps photos to cartoons, ``cartoon2photo``
maps back (for the cycle); the discriminators judge photos or cartoons, globally
or locally. One ``train_step`` serves both stages; what it updates is decided once,
when the model is set up for a stage (``TrainingPlan``).
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf
from keras import ops

from tfcartoon import losses
from tfcartoon.models.discriminator import build_discriminator
from tfcartoon.models.face_id import face_embedding
from tfcartoon.models.generator import build_generator
from tfcartoon.precision import at_least_float32
from tfcartoon.training.optimizer import ReferenceAdam

DISCRIMINATORS = ("photo_global", "photo_local", "cartoon_global", "cartoon_local")
GENERATOR_TERMS = ("adversarial", "cycle", "identity", "cam", "face_id", "group", "paired",
                   "paired_edge", "paired_texture")
LOG_NAMES = ("d_loss", "d_adversarial", "d_group", "g_loss",
             *(f"g_{term}" for term in GENERATOR_TERMS))


def _apply_connected(optimizer, grads, variables):
    """Apply the gradients that exist. Like PyTorch, a variable the loss does not reach
    (e.g. the reference's unused ConvBlock shortcut kernels) gets no update, not even
    weight decay."""
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def _add_gradients(first, second):
    """Element-wise sum of two gradient lists, where None means 'not reached'."""
    return [a if b is None else b if a is None else a + b for a, b in zip(first, second)]


@keras.saving.register_keras_serializable(package="tfcartoon")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant learning rate, then linear decay to 0 from ``decay_start * steps``."""

    def __init__(self, learning_rate, steps, decay_start=0.5):
        self.learning_rate = learning_rate
        self.steps = steps
        self.decay_start = decay_start

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = float(self.decay_start * self.steps)
        span = max(float(self.steps) - start, 1.0)
        fraction = ops.clip((float(self.steps) - step) / span, 0.0, 1.0)
        return self.learning_rate * ops.where(step < start, 1.0, fraction)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "steps": self.steps,
                "decay_start": self.decay_start}


@dataclasses.dataclass
class TrainingPlan:
    """What one stage trains.

    ``slots``: group index of each sample in one replica's batch (sorted; every
    replica gets the same layout, so generators route samples statically). ``specific``: groups whose
    branches are trained. ``train_shared``: whether the shared trunk is trained.
    ``rule``: 'strict' (one loss, the group variables only), 'reference' (base-group
    and CAM losses reach the trunk, the rest only the branches) or 'full' (every
    loss reaches every trained variable).
    """

    slots: list
    specific: list
    train_shared: bool
    rule: str
    group_losses: bool

    @classmethod
    def from_config(cls, config):
        train = config.train
        if train.stage == "base":
            return cls(slots=[0] * train.batch_size, specific=[config.base_group],
                       train_shared=True, rule="full", group_losses=False)
        slots = [g for g in range(len(config.groups)) for _ in range(train.batch_size)]
        if config.update_rule == "strict":
            return cls(slots, config.fewshot_groups, False, "strict", True)
        specific = [config.base_group] + [g for g in config.fewshot_groups
                                          if g != config.base_group]
        if config.update_rule == "full":
            specific = list(config.groups)
        return cls(slots, specific, True, config.update_rule, True)

    def generator_objective(self, per_sample, total=None):
        """The generator loss the optimizer differentiates, from per-sample losses.

        The batch mean, as in the reference, except under the strict rule: there each
        trained branch is reached only by its own group's samples, so the objective is
        the sum over the batch's groups of each group's mean. A branch's gradient is
        then the same whether one group or all of them train, and the same against the
        coupled weight decay as in a run of that group alone (the batch mean would
        scale it by 1/number of groups). Every group has the same number of samples
        per batch, so this is the mean times the number of groups.

        ``per_sample`` may be a micro-batch of a batch of ``total`` samples (default:
        the whole batch): it then gives that micro-batch's share, and the shares of a
        batch's micro-batches add up to the batch's objective.
        """
        total = len(self.slots) if total is None else total
        share = ops.sum(per_sample) / float(total)
        return share * len(set(self.slots)) if self.rule == "strict" else share

    def micro_batches(self, by_group=True):
        """``(start, stop)`` of each micro-batch of a replica's batch: one per group (the
        slots are sorted by group) or, with ``by_group=False``, the whole batch."""
        if not by_group:
            return [(0, len(self.slots))]
        bounds = [i for i in range(1, len(self.slots)) if self.slots[i] != self.slots[i - 1]]
        starts, stops = [0, *bounds], [*bounds, len(self.slots)]
        return list(zip(starts, stops))

    def needs_backward(self, group_names):
        """Whether samples of these groups reach a trained variable (their generator
        loss must then be differentiated); otherwise they only run forward."""
        return self.train_shared or any(name in self.specific for name in group_names)


class CartoonGAN(keras.Model):
    """Two generators and four discriminators trained together (see module doc)."""

    def __init__(self, config, face_embedder=None, **kwargs):
        super().__init__(name="cartoon_gan", **kwargs)
        model = config.model
        self.config = config
        self.plan = TrainingPlan.from_config(config)
        self.photo2cartoon = build_generator(config.groups, model.ngf, model.image_size,
                                             model.hourglass_depth, name="photo2cartoon")
        self.cartoon2photo = build_generator(config.groups, model.ngf, model.image_size,
                                             model.hourglass_depth, name="cartoon2photo")
        self.discriminators = {}
        for name in DISCRIMINATORS:
            kind = name.split("_")[1]
            layers = model.global_layers if kind == "global" else model.local_layers
            self.discriminators[name] = build_discriminator(
                kind, config.groups, model.ndf, model.image_size, n_layers=layers, name=name)
        self.face_embedder = face_embedder
        if face_embedder is not None:
            face_embedder.trainable = False
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOG_NAMES}
        # True while the run is in its supervised warm-up (train.supervised_steps): the
        # step then trains the generators on the paired terms only. The run loop sets it
        # and rebuilds the train function when it changes.
        self.supervised = False
        self.built = True  # every sub-model is built above

    # --- variable sets -------------------------------------------------------------

    def _generators(self):
        return (self.photo2cartoon, self.cartoon2photo)

    def specific_variables(self):
        return [v for gen in self._generators() for g in self.plan.specific
                for v in gen.group_variables(g)]

    def shared_variables(self):
        if not self.plan.train_shared:
            return []
        return [v for gen in self._generators() for v in gen.shared_variables]

    def generator_variables(self):
        return self.shared_variables() + self.specific_variables()

    def discriminator_variables(self):
        return [v for d in self.discriminators.values() for v in d.trainable_variables]

    def build_optimizers(self):
        """Fresh Adam optimizers bound to this stage's variable sets."""
        train = self.config.train
        schedule = LinearDecay(train.lr, train.steps, train.decay_start)

        def adam(name):
            return ReferenceAdam(schedule, beta_1=train.beta_1, beta_2=train.beta_2,
                                 l2=train.weight_decay, name=name)

        generator_opt = adam("generator_adam")
        if keras.config.dtype_policy().name == "mixed_float16":
            generator_opt = keras.optimizers.LossScaleOptimizer(
                generator_opt, initial_scale=train.initial_loss_scale,
                name="loss_scale_optimizer")
        discriminator_opt = adam("discriminator_adam")
        generator_opt.build(self.generator_variables())
        discriminator_opt.build(self.discriminator_variables())
        self.generator_optimizer = generator_opt
        self.discriminator_optimizer = discriminator_opt
        return generator_opt, discriminator_opt

    @property
    def metrics(self):
        return list(self.trackers.values())

    # --- losses ----------------------------------------------------------------

    def _discriminate(self, names, images, training=False):
        return {n: self.discriminators[n](images, training=training) for n in names}

    def _discriminator_losses(self, photo, cartoon, fake_photo, fake_cartoon, group):
        weights = self.config.loss
        adversarial, group_term = 0.0, 0.0
        for domain, real, fake in (("photo", photo, fake_photo),
                                   ("cartoon", cartoon, fake_cartoon)):
            names = [n for n in DISCRIMINATORS if n.startswith(domain)]
            real_out = self._discriminate(names, real, training=True)
            fake_out = self._discriminate(names, fake, training=True)
            for n in names:
                adversarial += losses.discriminator_adversarial(
                    real_out[n]["patch_logit"], fake_out[n]["patch_logit"])
                adversarial += losses.discriminator_adversarial(
                    real_out[n]["cam_logit"], fake_out[n]["cam_logit"])
                if self.plan.group_losses:
                    group_term += losses.group_classification(
                        real_out[n]["group_logit"], group, len(self.config.groups))
        adversarial = weights.adversarial * adversarial
        group_term = weights.group_discriminator * group_term
        return adversarial + group_term, {"d_adversarial": adversarial, "d_group": group_term}

    def _face_id(self, photo, cartoon, fake_photo, fake_cartoon):
        """Per-sample 1 - cos between each real image and its translation."""
        embeddings = face_embedding(self.face_embedder, ops.concatenate(
            [photo, fake_cartoon, cartoon, fake_photo], axis=0))
        real_p, fake_c, real_c, fake_p = ops.split(embeddings, 4, axis=0)
        return (losses.face_id(real_p, fake_c, per_sample=True)
                + losses.face_id(real_c, fake_p, per_sample=True))

    def _translate(self, photo, cartoon, slots=None, identity=True):
        """Cross-domain and identity passes, two generator calls on doubled batches.

        Normalisation is per sample, so a concatenated batch gives each sample the
        output it would get alone (and so does a micro-batch). ``slots``: the group
        index of each sample of ``photo`` (default: the whole batch's). With
        ``identity=False`` only the cross-domain passes run (what the discriminators
        need) and the identity outputs are None.
        """
        slots = list(self.plan.slots if slots is None else slots)
        if not identity:
            return (self.photo2cartoon.route(photo, slots),
                    self.cartoon2photo.route(cartoon, slots), None, None)
        slots = slots * 2
        both = ops.concatenate([photo, cartoon], axis=0)
        to_cartoon = self.photo2cartoon.route(both, slots)
        to_photo = self.cartoon2photo.route(ops.concatenate([cartoon, photo], axis=0), slots)
        split = lambda out: [{k: v for k, v in zip(out, parts)}  # noqa: E731
                             for parts in zip(*(ops.split(v, 2, axis=0)
                                                for v in out.values()))]
        fake_cartoon, cartoon_as_cartoon = split(to_cartoon)
        fake_photo, photo_as_photo = split(to_photo)
        return fake_cartoon, fake_photo, cartoon_as_cartoon, photo_as_photo

    def _generator_terms(self, photo, cartoon, group, translated, slots=None):
        """Per-sample generator loss terms (each (B,), unweighted)."""
        slots = self.plan.slots if slots is None else slots
        fake_cartoon, fake_photo, cartoon_as_cartoon, photo_as_photo = translated
        recon_photo = self.cartoon2photo.route(fake_cartoon["image"], slots)["image"]
        recon_cartoon = self.photo2cartoon.route(fake_photo["image"], slots)["image"]

        adversarial, group_term = 0.0, 0.0
        for domain, fake in (("photo", fake_photo["image"]), ("cartoon", fake_cartoon["image"])):
            names = [n for n in DISCRIMINATORS if n.startswith(domain)]
            for n, out in self._discriminate(names, fake).items():
                adversarial += losses.generator_adversarial(out["patch_logit"], per_sample=True)
                adversarial += losses.generator_adversarial(out["cam_logit"], per_sample=True)
                if self.plan.group_losses:
                    group_term += losses.group_classification(
                        out["group_logit"], group, len(self.config.groups), per_sample=True)
        terms = {
            "adversarial": adversarial,
            "cycle": losses.l1(recon_photo, photo, True) + losses.l1(recon_cartoon, cartoon, True),
            "identity": (losses.l1(photo_as_photo["image"], photo, True)
                         + losses.l1(cartoon_as_cartoon["image"], cartoon, True)),
            "cam": (losses.cam_bce(fake_photo["cam_logit"], 1, True)
                    + losses.cam_bce(photo_as_photo["cam_logit"], 0, True)
                    + losses.cam_bce(fake_cartoon["cam_logit"], 1, True)
                    + losses.cam_bce(cartoon_as_cartoon["cam_logit"], 0, True)),
            "group": group_term if self.plan.group_losses else ops.zeros_like(adversarial),
        }
        if self.face_embedder is not None:
            terms["face_id"] = self._face_id(photo, cartoon, fake_photo["image"],
                                             fake_cartoon["image"])
        else:
            terms["face_id"] = ops.zeros_like(adversarial)
        terms.update(self._paired_terms(photo, cartoon, fake_photo["image"],
                                        fake_cartoon["image"]))
        return terms

    def _paired_terms(self, photo, cartoon, fake_photo, fake_cartoon):
        """Per-sample paired terms: each translation against its input's partner.

        Zero unless the data are paired (``data.paired``), where ``cartoon[i]`` is the
        cartoon of ``photo[i]``.
        """
        if not self.config.data.paired:
            zeros = ops.zeros((ops.shape(photo)[0],), at_least_float32(fake_photo.dtype))
            return {"paired": zeros, "paired_edge": zeros, "paired_texture": zeros}
        pairs = ((fake_cartoon, cartoon), (fake_photo, photo))
        return {name: sum(loss(fake, real, per_sample=True) for fake, real in pairs)
                for name, loss in (("paired", losses.l1), ("paired_edge", losses.gradient_l1),
                                   ("paired_texture", losses.gradient_energy_l1))}

    def _weighted(self, terms):
        weights = self.config.loss
        scale = {"adversarial": weights.adversarial, "cycle": weights.cycle,
                 "identity": weights.identity, "cam": weights.cam,
                 "face_id": self.config.face_id.weight, "group": weights.group_generator,
                 "paired": weights.paired, "paired_edge": weights.paired_edge,
                 "paired_texture": weights.paired_texture}
        return {name: scale[name] * value for name, value in terms.items()}

    # --- the step ----------------------------------------------------------------

    @staticmethod
    def _scaled(optimizer, loss):
        """The loss to differentiate: per-replica share, times the loss scale if any.

        Must be computed while the tape records, or the gradients come back None.
        """
        loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            loss = optimizer.scale_loss(loss)
        return loss

    @staticmethod
    def _apply(optimizer, tape, scaled_loss, variables):
        grads = tape.gradient(scaled_loss, variables)
        _apply_connected(optimizer, grads, variables)

    def train_step(self, data):
        if self.supervised:
            return self._supervised_step(data)
        return self._adversarial_step(data)

    def _supervised_step(self, data):
        """Warm-up step: both generators learn their pairs; no discriminator runs."""
        photo, cartoon = data["photo"], data["cartoon"]
        generator_vars = self.generator_variables()
        with tf.GradientTape() as tape:
            fake_cartoon = self.photo2cartoon.route(photo, self.plan.slots)["image"]
            fake_photo = self.cartoon2photo.route(cartoon, self.plan.slots)["image"]
            terms = self._paired_terms(photo, cartoon, fake_photo, fake_cartoon)
            if self.face_embedder is not None:
                terms["face_id"] = self._face_id(photo, cartoon, fake_photo, fake_cartoon)
            terms = self._weighted(terms)
            g_loss = ops.mean(sum(terms.values()))
            scaled = self._scaled(self.generator_optimizer, g_loss)
        self._apply(self.generator_optimizer, tape, scaled, generator_vars)
        logs = {"g_loss": g_loss, **{f"g_{name}": ops.mean(v) for name, v in terms.items()}}
        for name, value in logs.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in logs}

    def _adversarial_step(self, data):
        """One step of the method, in micro-batches (``train.group_micro_batches``).

        Each group's samples form a micro-batch (or the whole batch is one). A
        micro-batch whose samples reach no trained variable (another group's branch
        under the strict rule) runs only its two cross-domain passes, forward: the
        discriminators need its fakes, and its generator losses, which reach nothing
        that trains, are not computed (the ``g_*`` logs are means over the trained
        groups' samples, with or without micro-batches). The others are recorded on a
        tape of their own, differentiated one after the other, and their gradients
        added up, so each optimizer is applied once, to the same step as one pass over
        the whole batch: the objective is a sum over samples (``generator_objective``),
        normalisation is per sample, and the discriminator step sees every fake at once.
        """
        photo, cartoon, group = data["photo"], data["cartoon"], data["group"]
        slots, names = self.plan.slots, self.config.groups
        total = len(slots)
        parts = []
        for start, stop in self.plan.micro_batches(self.config.train.group_micro_batches):
            part_slots = slots[start:stop]
            backward = self.plan.needs_backward({names[s] for s in part_slots})
            parts.append((start, stop, part_slots, backward))

        # Phase 1: translations. The tapes of the trained micro-batches stay open (not
        # recording) over the discriminator update, which must see every group's fakes.
        tapes, translated, barrier = {}, {}, []
        for start, stop, part_slots, backward in parts:
            inputs = self._after(barrier, photo[start:stop], cartoon[start:stop])
            if backward:
                tapes[start] = tf.GradientTape(persistent=self.plan.rule == "reference")
            with tapes.get(start) or contextlib.nullcontext():
                translated[start] = self._translate(*inputs, part_slots, identity=backward)
            barrier = [translated[start][0]["image"], translated[start][1]["image"]]
        # The generators do not change before their own update, so the reference's
        # discriminator pass on freshly generated fakes sees exactly these images.
        fake_cartoon, fake_photo = (
            ops.stop_gradient(ops.concatenate([translated[p[0]][k]["image"] for p in parts],
                                              axis=0)) for k in (0, 1))
        with tf.GradientTape() as d_tape:
            d_loss, d_logs = self._discriminator_losses(photo, cartoon, fake_photo,
                                                        fake_cartoon, group)
            d_scaled = self._scaled(self.discriminator_optimizer, d_loss)
        self._apply(self.discriminator_optimizer, d_tape, d_scaled,
                    self.discriminator_variables())

        # Phase 2: generator losses, one micro-batch after the other; gradients added.
        generator_vars = self.generator_variables()
        grads, part_terms, logged_slots, barrier = None, [], [], [d_loss]
        for start, stop, part_slots, backward in parts:
            if not backward:
                continue
            inputs = (photo[start:stop], cartoon[start:stop], translated[start])
            tape = tapes.pop(start)
            with tape:  # the barrier's identities on the tape
                photo_part, cartoon_part, fakes = self._after(barrier, *inputs)
                terms = self._weighted(self._generator_terms(
                    photo_part, cartoon_part, group[start:stop], fakes, part_slots))
                objectives = self._generator_objectives(terms, group[start:stop], total)
            part_grads = self._objective_gradients(tape, objectives)
            grads = part_grads if grads is None else _add_gradients(grads, part_grads)
            barrier = [g for g in grads if g is not None]
            part_terms.append(terms)
            logged_slots += part_slots
        _apply_connected(self.generator_optimizer, grads, generator_vars)

        # Log the trained samples' losses (one pass over a batch with untrained groups
        # computed the others' too).
        trained = [i for i, s in enumerate(logged_slots)
                   if self.plan.needs_backward({names[s]})]
        terms = {name: ops.take(ops.concatenate([t[name] for t in part_terms], axis=0),
                                trained, axis=0)
                 for name in part_terms[0]}
        logs = {"d_loss": d_loss, **d_logs, "g_loss": ops.mean(sum(terms.values()))}
        logs.update({f"g_{name}": ops.mean(value) for name, value in terms.items()})
        for name, value in logs.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @staticmethod
    def _after(barrier, *structures):
        """``structures`` unchanged, but computed after ``barrier`` in a graph: micro-
        batches then run one after the other instead of all at once, which is what
        bounds the memory. (No-op when executing eagerly.)"""
        if barrier and not tf.executing_eagerly():
            with tf.control_dependencies(barrier):
                structures = tf.nest.map_structure(tf.identity, structures)
        return structures if len(structures) > 1 else structures[0]

    def _generator_objectives(self, terms, group, total):
        """This micro-batch's share of the generator losses, scaled for the optimizer
        (call while the tape records): one loss for every generator variable, or under
        the reference rule a (shared, specific) pair: shared variables follow the
        base-group and CAM losses, branch variables every loss."""
        per_sample = sum(terms.values())
        optimizer = self.generator_optimizer
        if self.plan.rule != "reference":
            return [self._scaled(optimizer,
                                 self.plan.generator_objective(per_sample, total))]
        base = ops.cast(ops.equal(group, 0), per_sample.dtype)
        own = per_sample - terms["cam"] - terms["group"]
        shared_loss = ops.sum(base * own + terms["cam"]) / float(total)
        specific_loss = ops.sum((1.0 - base) * own + terms["group"]) / float(total)
        return [self._scaled(optimizer, shared_loss), self._scaled(optimizer, specific_loss)]

    def _objective_gradients(self, tape, objectives):
        """Gradients for ``generator_variables()`` (None where a loss does not reach)."""
        variables = self.generator_variables()
        if len(objectives) == 1:
            return tape.gradient(objectives[0], variables)
        shared_loss, specific_loss = objectives
        specific = self.specific_variables()
        grads = tape.gradient(shared_loss, variables)
        offset = len(variables) - len(specific)
        return grads[:offset] + _add_gradients(grads[offset:],
                                               tape.gradient(specific_loss, specific))

    def call(self, inputs):
        """Inference of the photo -> cartoon generator (``{"image", "group"}``)."""
        return self.photo2cartoon(inputs)["image"]
