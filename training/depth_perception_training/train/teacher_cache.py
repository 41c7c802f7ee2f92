"""The frozen teacher's outputs per training sample, kept for the student's later epochs.

The student task runs its frozen teacher on the unaugmented day frames of each sample
(depth, scaled disparity, encoder tokens, poses, the photometric errors of the day
frames warped with its depth): the same numbers whenever the sample comes back. Every
operation there works per sample (eval mode, no batch statistics), so a batch put
together from the rows of earlier batches equals what the forward would compute,
provided each tensor keeps the layout the forward gives it (the tokens are a
transposed view: a reduction over another layout would round otherwise).
"""
from __future__ import annotations

import torch


class TeacherCache:
    """{dataset index: that sample's rows of the teacher's outputs}.

    Outputs are a dict of batch tensors [B,...] and lists of them (``errors``).
    """

    def __init__(self):
        self.rows: dict[int, dict] = {}
        self._strides: dict = {}

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: list[int]) -> dict | None:
        """The outputs of a batch of these samples when every one is known, else None."""
        if not index or any(i not in self.rows for i in index):
            return None
        rows = [self.rows[i] for i in index]
        out = {}
        for key, stride in self._strides.items():
            if isinstance(stride, list):
                out[key] = [_stacked([r[key][j] for r in rows], s) for j, s in enumerate(stride)]
            else:
                out[key] = _stacked([r[key] for r in rows], stride)
        return out

    def put(self, index: list[int], outputs: dict) -> None:
        """Keep the rows of a computed batch (``index``: its samples, in batch order)."""
        self._strides = {key: ([t.stride() for t in v] if isinstance(v, list) else v.stride())
                         for key, v in outputs.items()}
        for b, i in enumerate(index):
            self.rows[i] = {key: ([t[b].clone() for t in v] if isinstance(v, list)
                                  else v[b].clone()) for key, v in outputs.items()}


def _stacked(rows: list, stride: tuple) -> torch.Tensor:
    """``torch.stack(rows)`` laid out with ``stride`` (a batch tensor's)."""
    stacked = torch.stack(rows)
    return torch.empty_strided(stacked.shape, stride, dtype=stacked.dtype,
                               device=stacked.device).copy_(stacked)
