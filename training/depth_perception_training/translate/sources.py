"""What gets translated: day-clear frames of the source bags, sharded over processes,
and the real target-condition frames used as image prompts.

Frames are read through the onboard data layer (:class:`BagSequence` without
neighbours, so every frame is a target) at the bag's own resolution. The work list is
ordered by (bag, stamp) and process ``r`` of ``n`` takes items ``r, r + n, ...``: a
function of the list alone, so any number of processes covers it exactly once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depth_perception.data.bag import BagReader, BagTopics, read_bag_metadata
from depth_perception.data.samples import BagSequence, SampleConfig


@dataclass(frozen=True)
class FrameRef:
    """One source frame: where it is and what it is called in the output."""

    bag: str          # absolute bag folder
    bag_id: str       # short unique name of the bag in this dataset
    index: int        # image index in the bag (header-stamp order)
    stamp_ns: int


@dataclass
class SourceFrame:
    ref: FrameRef
    rgb: np.ndarray           # [H,W,3] uint8
    topic: str                # image topic as recorded (raw or /compressed)
    intrinsics: object        # depth_perception.camera.Intrinsics of the frame


def find_bags(paths: list[str]) -> list[Path]:
    """Bag folders: each path is a bag (has metadata.yaml) or a folder of bags."""
    bags: list[Path] = []
    for p in map(Path, paths):
        if (p / "metadata.yaml").is_file():
            bags.append(p.resolve())
        elif p.is_dir():
            found = sorted(q.parent.resolve() for q in p.glob("*/metadata.yaml"))
            if not found:
                raise FileNotFoundError(f"source bag {p}: neither a rosbag2 folder nor a "
                                        "folder of rosbag2 folders (no metadata.yaml)")
            bags += found
        else:
            raise FileNotFoundError(f"source bag {p} does not exist")
    if len(set(bags)) != len(bags):
        raise ValueError(f"a source bag is listed twice: {[str(b) for b in bags]}")
    return bags


def bag_ids(bags: list[Path]) -> dict[Path, str]:
    """Unique short names: the folder name, prefixed with its parent's when names clash."""
    names = [b.name for b in bags]
    ids = {b: (f"{b.parent.name}-{b.name}" if names.count(b.name) > 1 else b.name)
           for b in bags}
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"source bags have clashing names {sorted(ids.values())}; give "
                         "them distinct folder names")
    return ids


def topics(image_topic: str, camera_info_topic: str) -> BagTopics:
    return BagTopics(image=image_topic, camera_info=camera_info_topic)


class SourceBags:
    """The day-clear source frames of a configuration (``cfg.source``)."""

    def __init__(self, source_cfg):
        self.cfg = source_cfg
        self.bags = find_bags(list(source_cfg.bags))
        self.ids = bag_ids(self.bags)
        self._sequences: dict[str, BagSequence] = {}

    def sequence(self, bag: str | Path) -> BagSequence:
        key = str(bag)
        if key not in self._sequences:
            sample = SampleConfig(offsets=(), skip_static=False, with_lidar=False,
                                  with_gt=False,
                                  topics=topics(self.cfg.image_topic, self.cfg.camera_info_topic))
            self._sequences[key] = BagSequence(bag, sample)
        return self._sequences[key]

    def frames(self) -> list[FrameRef]:
        """Every source frame (``every``-th, at most ``max_frames`` per bag), ordered."""
        refs = []
        for bag in self.bags:
            seq = self.sequence(bag)
            chosen = seq.targets[::self.cfg.every]
            if self.cfg.max_frames:
                chosen = chosen[:self.cfg.max_frames]
            refs += [FrameRef(str(bag), self.ids[bag], int(i), int(seq.stamps[i]))
                     for i in chosen]
        return refs

    def read(self, ref: FrameRef) -> SourceFrame:
        seq = self.sequence(ref.bag)
        return SourceFrame(ref, seq.frame(ref.index), seq.reader.topic_name("image"),
                           seq.intrinsics)

    def close(self) -> None:
        for seq in self._sequences.values():
            seq.reader.close()


def shard(items: list, rank: int, world: int) -> list:
    """Items ``rank, rank + world, ...`` of ``items``."""
    if not 0 <= rank < world:
        raise ValueError(f"process rank {rank} outside 0..{world - 1}")
    return items[rank::world]


def sample_seed(base_seed: int, bag_id: str, stamp_ns: int, condition: str) -> int:
    """Seed of one (frame, condition): a hash of its identity, not of the run order."""
    text = f"{base_seed}|{bag_id}|{stamp_ns}|{condition}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


class StylePool:
    """Real frames of one target condition (IP-Adapter image prompts), from bags and/or
    a folder of images; ``pick(seed)`` chooses one deterministically."""

    def __init__(self, condition: str, style_cfg, image_topic: str = "/camera/image_raw"):
        self.condition = condition
        self.images: list[np.ndarray] = []
        self.names: list[str] = []
        for bag in (find_bags(list(style_cfg.bags)) if style_cfg.bags else []):
            reader = BagReader(bag, BagTopics(image=image_topic))
            n = reader.count("image")
            picks = np.unique(np.linspace(0, n - 1, min(n, style_cfg.max_images)).round()
                              .astype(int)) if n else []
            for i in picks:
                self.images.append(reader.image(int(i)))
                self.names.append(f"{bag.name}#{int(reader.stamps('image')[i])}")
            reader.close()
        if style_cfg.folder:
            self._add_folder(Path(style_cfg.folder), style_cfg.max_images)
        if not self.images:
            raise ValueError(f"style.{condition} gives no image: set style.{condition}.bags "
                             f"(bags recorded at {condition}) or style.{condition}.folder "
                             "(png/jpg frames); the IP-Adapter needs real frames of the "
                             "target condition")

    def _add_folder(self, folder: Path, limit: int) -> None:
        import cv2

        if not folder.is_dir():
            raise FileNotFoundError(f"style folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
        for f in files:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"style image {f} cannot be read as an image")
            self.images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            self.names.append(f.name)

    def pick(self, seed: int) -> tuple[np.ndarray, str]:
        k = int(np.random.default_rng(seed).integers(len(self.images)))
        return self.images[k], self.names[k]


def condition_of(bag: Path) -> str | None:
    custom = read_bag_metadata(bag).get("custom_data") or {}
    return custom.get("condition") if isinstance(custom, dict) else None
