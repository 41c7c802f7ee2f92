"""Pairing API: a day-clear frame and its translations, read from a translated dataset.

What the student trainer consumes::

    pairs = TranslationPairs("runs/translate_gdt")          # reads manifest.jsonl
    for frame in pairs:                                     # one per day-clear frame
        frame.bag, frame.stamp_ns, frame.index              # the source frame
        frame.translations["night"].image()                 # [H,W,3] uint8, source size
    pairs.lookup(sample.bag, sample.stamp_ns)               # from a BagSequence Sample
    pairs.day_image(k)                                      # the day-clear original

Only translations that passed the depth-consistency check are returned
(``accepted_only=False`` returns all); ``conditions=[...]`` keeps some; ``complete=True``
keeps only frames that have every requested condition. The ``gdt``, ``paired`` and
``photometric`` translators all write this format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depth_perception_training.translate import manifest


@dataclass(frozen=True)
class TranslatedImage:
    condition: str
    path: Path
    record: dict              # the manifest record (prompt, seed, models, consistency...)

    def image(self) -> np.ndarray:
        """[H,W,3] uint8 RGB at the source frame's size."""
        return manifest.read_image(self.path)


@dataclass
class PairedFrame:
    bag: str                  # absolute source bag folder
    bag_id: str
    stamp_ns: int
    index: int                # image index in the source bag
    topic: str
    translations: dict = field(default_factory=dict)    # {condition: TranslatedImage}


class TranslationPairs:
    """Day-clear frames of a translated dataset with their translations per condition."""

    def __init__(self, output_dir: str | Path, conditions: list[str] | None = None,
                 accepted_only: bool = True, complete: bool = False):
        self.root = Path(output_dir)
        path = self.root / manifest.MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected the output folder of "
                                    "`depth-perception translate` (a finished run merges "
                                    "its manifest there)")
        records = manifest.read_jsonl(path)
        self.conditions = sorted({r["condition"] for r in records}
                                 if conditions is None else conditions)
        frames: dict[tuple[str, int], PairedFrame] = {}
        for r in records:
            if r["condition"] not in self.conditions or (accepted_only and not r["accepted"]):
                continue
            key = (str(Path(r["source_bag"])), int(r["stamp_ns"]))
            frame = frames.setdefault(key, PairedFrame(key[0], r["bag_id"], key[1],
                                                       int(r["index"]), r["topic"]))
            frame.translations[r["condition"]] = TranslatedImage(
                r["condition"], self.root / r["image"], r)
        self.frames = sorted((f for f in frames.values()
                              if not complete or len(f.translations) == len(self.conditions)),
                             key=lambda f: (f.bag_id, f.stamp_ns))
        self._by_key = {(f.bag, f.stamp_ns): f for f in self.frames}
        self._sequences: dict = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, k: int) -> PairedFrame:
        return self.frames[k]

    def __iter__(self):
        return iter(self.frames)

    def lookup(self, bag: str | Path, stamp_ns: int) -> PairedFrame | None:
        """The paired frame of a source bag's frame (None if it has no translation)."""
        return self._by_key.get((str(Path(bag).resolve()), int(stamp_ns)))

    def day_image(self, k: int) -> np.ndarray:
        """[H,W,3] uint8 day-clear original of frame ``k``, read through the data layer."""
        from depth_perception.data.bag import BagTopics
        from depth_perception.data.samples import BagSequence, SampleConfig

        f = self.frames[k]
        if f.bag not in self._sequences:
            image_topic = f.topic[:-len("/compressed")] if f.topic.endswith(
                "/compressed") else f.topic
            self._sequences[f.bag] = BagSequence(f.bag, SampleConfig(
                offsets=(), skip_static=False, with_lidar=False, with_gt=False,
                topics=BagTopics(image=image_topic)))
        return self._sequences[f.bag].frame(f.index)
