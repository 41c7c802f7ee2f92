"""Student samples: a day-clear frame for the teacher, a possibly translated one for the student.

:class:`StudentDataset` wraps an *unaugmented* :class:`~depth_perception_training.dataset.DepthDataset`
over day-clear bags and the translations of its frames (the pairing API of
:mod:`depth_perception_training.translate.pairs`, whatever translator made them). Each
item is a dict (``n`` context frames, H x W the output size):

* ``image`` [3,H,W] float32 in [0,1]: the original day-clear frame (teacher input and
  photometric target; never translated, jittered or flipped)
* ``context`` [n,3,H,W]: the adjacent day-clear frames, unaugmented
* ``student_image`` [3,H,W]: the frame the student sees, drawn by
  :func:`condition_probabilities` (the day-clear frame with ``keep_probability`` P,
  each target condition with (1 - P)/|C|), then colour jitter / noise and a
  horizontal flip
* ``flip`` bool tensor: the student image is mirrored (the objective flips the
  student's outputs back)
* ``student_condition`` str: ``day-clear`` or the translation's condition
* ``K`` [3,3], ``T_src_tgt`` [n,4,4], ``distance`` [n], ``gt_depth`` / ``lidar_depth``
  [1,H,W] of the unflipped day frame; ``condition``, ``index``

A frame's translations are merged over every translated dataset given (night in one
folder and rain in another both count); when two folders hold the same condition of a
frame, the first folder in the list wins.

Randomness (mixing and augmentation) is drawn from ``default_rng([seed, epoch, index])``
like the day dataset's, so samples are reproducible and resumes exact.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from depth_perception_training.augment import AugmentConfig, Augmenter, AugmentParams

log = logging.getLogger(__name__)

DAY = "day-clear"


def default_keep_probability(num_conditions: int) -> float:
    """|C|/(|C|+1): SSD's P as printed ("P % probability of no changes ... P = |C|/(|C|+1)"),
    the unchanged frame with probability 2/3 for night and rain, each condition 1/6.

    The other reading (P as the probability of a translation: the unchanged frame and
    every condition 1/(|C|+1) each, as md4all mixes) is ``keep_probability = 1/(|C|+1)``.
    At CPU scale, with a weight average (``student_tiny.yaml``), the printed reading kept
    the student closer to its teacher by day (bench/RESULTS.md, "Batch statistics and
    mixing of a convolutional student").
    """
    if num_conditions < 1:
        raise ValueError("need at least one target condition")
    return num_conditions / (num_conditions + 1)


def condition_probabilities(available, conditions, keep_probability: float) -> dict:
    """{outcome: probability} of what the student sees for one frame.

    Over all target conditions C the draw is: the unchanged day-clear frame with P =
    ``keep_probability``, each condition with (1 - P)/|C|. A frame has a condition only
    if it has an accepted translation into it (``available``). With every condition
    available these are the probabilities; when some are missing, the outcomes the frame
    has (the day-clear frame and its available conditions) keep their weights and are
    renormalised to sum to 1. A missing night therefore never hands its whole share to
    rain, as drawing among the available translations with 1 - P would: with P = 2/3 and
    only rain, rain gets (1/6)/(2/3 + 1/6) = 1/5, not 1/3.
    """
    conditions = list(conditions)
    share = (1.0 - keep_probability) / len(conditions)
    weights = {DAY: keep_probability}
    weights.update({c: share for c in conditions if c in set(available)})
    total = sum(weights.values())
    if total <= 0:                          # P = 0 and no translation: only the day frame
        return {DAY: 1.0}
    return {c: w / total for c, w in weights.items()}


def choose_condition(rng: np.random.Generator, available, conditions,
                     keep_probability: float) -> str:
    """One draw from :func:`condition_probabilities` (a single uniform number, outcomes in
    the order day-clear, then ``conditions``)."""
    probs = condition_probabilities(available, conditions, keep_probability)
    u, acc = rng.random(), 0.0
    for outcome, p in probs.items():
        acc += p
        if u < acc:
            return outcome
    return next(reversed(probs))            # u within rounding of 1


class StudentDataset:
    """``torch.utils.data.Dataset``-compatible pairs of (day frame, student frame).

    Args:
        day: a DepthDataset over day-clear bags built with ``augment=None``.
        pairs: TranslationPairs objects (translated datasets) covering ``day``'s frames.
        conditions: target conditions to draw from (each must occur in ``pairs``).
        keep_probability: probability of the unchanged frame (None: |C|/(|C|+1), SSD's P
            as printed).
        augment: AugmentConfig / Augmenter for the student image, or None.
        seed: base seed of mixing and augmentation.
    """

    def __init__(self, day, pairs, conditions, keep_probability: float | None = None,
                 augment=None, seed: int = 0):
        if day.augment is not None:
            raise ValueError("StudentDataset: the day dataset must be unaugmented (augment=None): "
                             "the teacher sees the original day-clear frame")
        conditions = [str(c) for c in conditions]
        if not conditions:
            raise ValueError("StudentDataset: no target condition (student.conditions)")
        if DAY in conditions:
            raise ValueError(f"StudentDataset: '{DAY}' is the source, not a target condition")
        found = set()
        for p in pairs:
            found.update(p.conditions)
        missing = sorted(set(conditions) - found)
        if missing:
            raise ValueError(f"StudentDataset: conditions {missing} are in no translated dataset "
                             f"(found {sorted(found)}); translate them or drop them from "
                             "student.conditions")
        self.day, self.pairs, self.conditions = day, list(pairs), conditions
        self.keep_probability = (default_keep_probability(len(conditions))
                                 if keep_probability is None else float(keep_probability))
        if not 0.0 <= self.keep_probability <= 1.0:
            raise ValueError(f"keep_probability must be in [0, 1], got {keep_probability}")
        if isinstance(augment, AugmentConfig):
            augment = Augmenter(augment)
        self.augment: Augmenter | None = augment
        self.seed, self.epoch = int(seed), 0
        # per frame: which conditions it has (merged over the folders), once
        self._available = [sorted(self.translations_of(i)) for i in range(len(day))]
        covered = sum(bool(a) for a in self._available)
        self.coverage = covered / max(len(day), 1)
        if covered == 0:
            raise ValueError("StudentDataset: no day-clear frame of the training bags has a "
                             "translation: were the translations made from these bags "
                             f"({[str(s.path) for s in day.sequences]})?")
        if covered < len(day):
            log.warning("StudentDataset: %d of %d day-clear frames have no translation (they "
                        "are always shown unchanged)", len(day) - covered, len(day))
        log.info("StudentDataset: frames with an accepted translation: %s", ", ".join(
            f"{c} {sum(c in a for a in self._available)}/{len(day)}" for c in conditions))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.day.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.day)

    def translations_of(self, index: int) -> dict:
        """{condition: TranslatedImage} of day sample ``index`` (bag + stamp lookup), merged
        over every translated dataset given."""
        seq, k = self.day.locate(index)
        stamp = int(seq.stamps[seq.targets[k]])
        bag = str(Path(seq.path).resolve())
        merged: dict = {}
        for p in self.pairs:                 # every folder; the first one wins a tie
            frame = p.lookup(bag, stamp)
            if frame is None:
                continue
            for c, t in frame.translations.items():
                if c in self.conditions:
                    merged.setdefault(c, t)
        return merged

    def probabilities(self, index: int) -> dict:
        """{outcome: probability} of frame ``index`` (:func:`condition_probabilities`)."""
        return condition_probabilities(self._available[index], self.conditions,
                                       self.keep_probability)

    def expected_mix(self, indices=None) -> dict:
        """{outcome: expected share of the samples of an epoch}: the mean over frames
        (``indices``, default all) of :meth:`probabilities` (what the counts of shown
        conditions approach)."""
        indices = range(len(self)) if indices is None else list(indices)
        total = {c: 0.0 for c in [DAY, *self.conditions]}
        for i in indices:
            for c, p in self.probabilities(i).items():
                total[c] += p
        return {c: v / max(len(indices), 1) for c, v in total.items()}

    def translated_frame(self, index: int, condition: str) -> np.ndarray:
        """[H,W,3] float32 in [0,1]: the translation at the training size (the data
        layer's own crop + resize, so K still holds)."""
        seq, _ = self.day.locate(index)
        image = self.translations_of(index)[condition].image()
        return seq.prepare(image).astype(np.float32) / 255.0

    def __getitem__(self, index: int) -> dict:
        import torch

        item = self.day[index]                      # unaugmented: image == image_aug
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
        # 1. mixing: the day frame or one of its translations
        condition = choose_condition(rng, self._available[index], self.conditions,
                                     self.keep_probability)
        if condition == DAY:
            student = item["image"].numpy().transpose(1, 2, 0)           # [H,W,3]
        else:
            student = self.translated_frame(index, condition)
        # 2. student-only augmentation: colour jitter + noise, then a flip
        params = self.augment.sample(rng) if self.augment is not None else AugmentParams()
        if not params.identity_colour:
            student = Augmenter.apply_colour(student, params, rng)
        if params.flip:
            student = student[:, ::-1]
        # 3. the teacher's side stays as the day dataset made it
        for key in ("image_aug", "context_aug"):
            item.pop(key)
        item["student_image"] = torch.from_numpy(
            np.ascontiguousarray(student.transpose(2, 0, 1), dtype=np.float32))
        item["flip"] = torch.tensor(bool(params.flip))
        item["student_condition"] = condition
        return item


class LabelledStudentDataset:
    """A :class:`StudentDataset` whose items also carry ``label_depth`` [1,H,W] float32
    metres (NaN where the label has none): the pseudo label of the day-clear frame from
    a ``depth-perception refine`` folder, cropped and resized as the frame is.

    Frames without a label are left out (``skipped`` counts them, and the log says how
    many); a dataset with no labelled frame at all is an error naming both sides.
    """

    def __init__(self, base: StudentDataset, labels):
        if labels.kind != "metric_depth":
            raise ValueError(f"student.pseudo_labels: {labels.root} holds {labels.kind} labels; "
                             "the student needs metric depth (refine with labels.align_to="
                             "lidar or teacher)")
        self.base, self.labels = base, labels
        self.entries: list[tuple[int, dict]] = []
        for i in range(len(base.day)):
            seq, k = base.day.locate(i)
            entry = labels.entry(Path(seq.path).name, int(seq.stamps[seq.targets[k]]))
            if entry is not None:
                self.entries.append((i, entry))
        self.skipped = len(base.day) - len(self.entries)
        if not self.entries:
            bags = sorted({str(Path(s.path).name) for s in base.day.sequences})
            labelled = sorted({f["bag"] for f in labels.frames})
            raise ValueError(f"student.pseudo_labels: no training frame of {bags} has a label in "
                             f"{labels.root} (it labels {labelled}); refine the bags of data.bags")
        if self.skipped:
            log.warning("student.pseudo_labels: %d of %d training frames have no label in %s "
                        "(left out)", self.skipped, len(base.day), labels.root)

    @property
    def day(self):
        """The day-clear frames' dataset (the base's)."""
        return self.base.day

    @property
    def coverage(self) -> float:
        return self.base.coverage

    @property
    def keep_probability(self) -> float:
        return self.base.keep_probability

    def expected_mix(self) -> dict:
        """:meth:`StudentDataset.expected_mix` over the labelled frames."""
        return self.base.expected_mix(i for i, _ in self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        import torch

        i, entry = self.entries[index]
        item = self.base[i]
        seq, _ = self.base.day.locate(i)
        depth = seq.prepare_depth(self.labels.load(entry))
        item["label_depth"] = torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None]
        return item
