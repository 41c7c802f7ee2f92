"""The contract every depth network of the package declares (no torch import here).

Training, export and the torch backend ask a depth network only what this protocol
names; each architecture's class declares the answers, so nothing probes signatures or
reaches into submodules, and a new architecture that forgets one member is refused when
it is looked up in the registry (``depth_perception.models.DEPTH_ARCHS``), not when a
training run gets to it.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = ["DepthNetwork", "NETWORK_MEMBERS", "check_depth_network"]


@runtime_checkable
class DepthNetwork(Protocol):
    """A depth network: ``forward(image [B,3,H,W] normalised) -> dict`` with ``depth``,
    ``disp`` and ``scaled_disp`` lists of [B,1,h,w] (scale 0 first, full resolution).

    Declared by the class:

    * ``size_multiple``: input height and width must be multiples of it;
    * ``returns_features``: ``forward(image, return_features=True)`` adds ``features``
      [B,N,C] (encoder tokens) and ``feature_grid`` (h, w);
    * ``config``: its config dataclass; ``hf_config_dict()``: the transformers config
      that rebuilds the exact architecture offline (what a checkpoint folder stores);
    * ``param_groups(lr_encoder, lr_decoder)``: optimiser groups (encoder, decoder);
    * ``disparity_heads()``: the output convolutions of its sigmoid disparity heads,
      whose bias sets the initial depth (empty: depth comes some other way, e.g. bins);
    * ``reset_random_layers()``: re-initialise the layers not loaded from pretrained
      weights with PyTorch's default Conv/Linear init; returns how many;
    * ``add_uncertainty_head()``: give the network (and its config) the log-variance head
      of :mod:`depth_perception.models.uncertainty`, so that ``forward`` also returns
      ``log_variance`` [B,1,H,W]; ValueError where the architecture has none.
    """

    size_multiple: ClassVar[int]
    returns_features: ClassVar[bool]
    config: Any

    def hf_config_dict(self) -> dict: ...

    def param_groups(self, lr_encoder: float, lr_decoder: float) -> list[dict]: ...

    def disparity_heads(self) -> list: ...

    def reset_random_layers(self) -> int: ...

    def add_uncertainty_head(self) -> None: ...


#: what a depth network class must declare
NETWORK_MEMBERS = ("size_multiple", "returns_features", "hf_config_dict", "param_groups",
                   "disparity_heads", "reset_random_layers", "add_uncertainty_head")


def check_depth_network(cls: type, arch: str) -> type:
    """``cls`` if it declares every member of :class:`DepthNetwork`; ValueError naming
    the missing ones otherwise."""
    missing = [m for m in NETWORK_MEMBERS if not hasattr(cls, m)]
    if missing:
        raise ValueError(f"depth model arch '{arch}': {cls.__name__} does not declare "
                         f"{missing} of the DepthNetwork protocol "
                         "(depth_perception/models/network.py)")
    return cls
