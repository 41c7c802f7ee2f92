"""Model metadata that travels with every model file.

Stored as JSON: in ONNX ``metadata_props`` under the key ``depth_perception``, in a
checkpoint folder as ``metadata.json``, beside a TensorRT engine as
``<engine>.json``. The runtime configures itself from it and refuses a model whose
metadata is missing or does not fit what it is asked to do.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from depth_perception import __version__

METADATA_KEY = "depth_perception"
SCHEMA_VERSION = 2

#: What the network's output means.
#: ``metric_depth``: z-depth in metres. ``disparity``: inverse depth mapped through
#: [min_depth, max_depth] by disp_to_depth (sigmoid output in [0, 1]).
#: ``relative_depth`` / ``relative_disparity``: affine-invariant, needs a scale policy.
OUTPUT_KINDS = ("metric_depth", "disparity", "relative_depth", "relative_disparity")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelMetadata:
    """Everything the runtime needs to feed a model and read its output.

    ``input_height``/``input_width`` of 0 mean "any size that is a multiple of
    ``size_multiple``" (dynamic models such as torch checkpoints); exported ONNX and
    TensorRT files always have a fixed size.

    ``train_height``/``train_width``: the input size the model was trained at, and
    ``train_focal_px`` the focal length in pixels at that size (0 = not recorded, e.g.
    transformers models). A metric model's scale is tied to that focal length: see
    :mod:`depth_perception.runtime.geometry`.
    """

    output_kind: str = "metric_depth"
    input_height: int = 0
    input_width: int = 0
    size_multiple: int = 14
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    min_depth: float = 0.1
    max_depth: float = 80.0
    input_name: str = "image"
    output_name: str = "depth"
    train_height: int = 0
    train_width: int = 0
    train_focal_px: float = 0.0
    provenance: dict = field(default_factory=dict)
    package_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.validate()

    # -- validation -------------------------------------------------------------
    def validate(self) -> None:
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"model metadata: output_kind '{self.output_kind}' is not one "
                             f"of {OUTPUT_KINDS}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"model metadata: mean/std must be 3 values with std > 0, got "
                             f"mean={self.mean} std={self.std}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"model metadata: need 0 < min_depth < max_depth, got "
                             f"{self.min_depth}, {self.max_depth}")
        if (self.input_height == 0) != (self.input_width == 0):
            raise ValueError("model metadata: input_height and input_width must both be set "
                             "or both be 0 (dynamic)")
        if (self.train_height == 0) != (self.train_width == 0) or min(
                self.train_height, self.train_width) < 0:
            raise ValueError("model metadata: train_height and train_width must both be "
                             f"positive or both 0, got {self.train_height}, {self.train_width}")
        if not (self.train_focal_px >= 0 and self.train_focal_px < float("inf")):
            raise ValueError(f"model metadata: train_focal_px must be >= 0 and finite, got "
                             f"{self.train_focal_px}")
        if self.train_focal_px > 0 and self.train_height == 0:
            raise ValueError("model metadata: train_focal_px needs train_height/train_width "
                             "(the size the focal length refers to)")
        if self.input_height < 0 or self.input_width < 0 or self.size_multiple < 1:
            raise ValueError("model metadata: negative input size or size_multiple < 1")
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"model metadata schema {self.schema_version} is newer than this "
                             f"package understands ({SCHEMA_VERSION}); update depth_perception")

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) for fixed-size models, None for dynamic ones."""
        return (self.input_height, self.input_width) if self.input_height else None

    @property
    def is_metric(self) -> bool:
        return self.output_kind in ("metric_depth", "disparity")

    # -- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "metadata") -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model metadata keys {unknown}; "
                             f"known keys are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> "ModelMetadata":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: model metadata is not valid JSON ({exc})") from exc
        return cls.from_dict(d, source)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelMetadata":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model metadata file {path} not found")
        return cls.from_json(path.read_text(), str(path))
