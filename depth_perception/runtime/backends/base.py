"""The one contract every inference backend fulfils: named tensors in, named tensors out.

Pre- and post-processing live outside backends (:mod:`depth_perception.runtime.processing`),
so TensorRT, onnxruntime and torch are interchangeable behind :class:`Backend`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from depth_perception.metadata import ModelMetadata


@dataclass(frozen=True)
class TensorSpec:
    """Shape (``None`` for a dynamic dimension) and numpy dtype name of one tensor."""

    shape: tuple
    dtype: str = "float32"

    def matches(self, array: np.ndarray) -> bool:
        """True if ``array`` has this rank and every fixed dimension."""
        return (array.ndim == len(self.shape)
                and all(d is None or d == s for d, s in zip(self.shape, array.shape)))


class Backend(abc.ABC):
    """An opened model. ``inputs``/``outputs``: tensor name -> :class:`TensorSpec`.

    ``name``: 'tensorrt', 'onnxruntime' or 'torch'; ``precision``: 'fp32', 'fp16', 'int8';
    ``device``: where it runs, for logs and diagnostics (e.g. 'cpu',
    'cuda:0', 'CPUExecutionProvider').
    """

    name: str = "backend"
    precision: str = "fp32"
    device: str = "cpu"
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model: ``feeds`` has every input by name; returns every output."""

    def close(self) -> None:
        """Release the model and its device memory (idempotent)."""

    def max_batch(self, input_name: str) -> int | None:
        """Frames one :meth:`run` takes on ``input_name``: the fixed leading dimension
        of its spec (1 for graphs exported at batch 1, TensorRT bindings planned for
        one frame), None when that dimension is dynamic (any batch)."""
        return self.inputs[input_name].shape[0]

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """ValueError if a feed is missing, unexpected, or of the wrong rank/size."""
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise ValueError(f"{self.name} backend: inputs are {sorted(self.inputs)}; "
                             f"missing {missing}, unexpected {extra}")
        for name, array in feeds.items():
            spec = self.inputs[name]
            if not spec.matches(np.asarray(array)):
                raise ValueError(f"{self.name} backend: input '{name}' has shape "
                                 f"{np.shape(array)}, the model expects {spec.shape}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, precision={self.precision!r}, "
                f"device={self.device!r}, inputs={self.inputs}, outputs={self.outputs})")


def check_metadata_against_io(metadata: ModelMetadata, inputs: dict[str, TensorSpec],
                              outputs: dict[str, TensorSpec], source: str) -> None:
    """Refuse a model whose metadata does not describe its tensors.

    Checks: the metadata input name is a model input of rank 4 with 3 channels, whose
    fixed height/width equal the metadata's (a fixed-size graph with dynamic metadata is
    refused too: the runtime would feed it other sizes), and the metadata output name is
    a model output. ``source`` names the file in the error.
    """
    name = metadata.input_name
    if name not in inputs:
        raise ValueError(f"{source}: metadata says the input tensor is '{name}' but the model's "
                         f"inputs are {sorted(inputs)}; fix the metadata (input_name) or "
                         "re-export the model")
    if metadata.output_name not in outputs:
        raise ValueError(f"{source}: metadata says the output tensor is "
                         f"'{metadata.output_name}' but the model's outputs are "
                         f"{sorted(outputs)}; fix the metadata (output_name)")
    shape = tuple(inputs[name].shape)
    if len(shape) != 4 or shape[1] not in (3, None):
        raise ValueError(f"{source}: input '{name}' has shape {shape}; expected [N,3,H,W]")
    if shape[0] not in (1, None):
        raise ValueError(f"{source}: input '{name}' has batch {shape[0]}; the runtime feeds "
                         "one frame at a time (batch 1)")
    h, w = shape[2], shape[3]
    fixed = metadata.fixed_size
    if fixed is None:
        if h is not None or w is not None:
            raise ValueError(f"{source}: the graph input '{name}' is fixed at {h}x{w} (HxW) "
                             "but the metadata says dynamic size (input_height/width 0); "
                             f"set input_height={h}, input_width={w} in the metadata")
    else:
        for dim, want, label in ((h, fixed[0], "height"), (w, fixed[1], "width")):
            if dim is not None and dim != want:
                raise ValueError(f"{source}: metadata input size {fixed[0]}x{fixed[1]} (HxW) "
                                 f"does not match the graph input '{name}' {shape}: "
                                 f"{label} {dim} != {want}")
