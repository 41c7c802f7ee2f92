"""Dry runs: a recipe's models at their real architecture and input size, one real step.

``--dry-run`` on ``train teacher|student|pose|metricgold``, ``translate`` and ``refine``
builds every model a recipe names from config objects with random weights (no download),
runs one real step on the device at hand (one optimisation step at the recipe's batch,
or one translated / refined sample) and prints, as its last line, one JSON object:

``recipe``, ``params`` (module -> parameter count), ``input_size``, ``batch``,
``flops_per_step`` (``torch.utils.flop_counter.FlopCounterMode`` over the step: matmuls,
convolutions and attention, forward and backward), ``peak_memory_gb`` and
``memory_method`` (how it was measured), ``fits_24gb`` with ``fits_basis``,
``seconds_per_step`` (wall time of the counted step) and ``cpu_seconds_per_step`` (the
process's CPU time over it: the figure to compare on a shared, loaded machine),
``device``, ``dtype``, ``notes``;
``stages`` when the models run one stage at a time (GDT: caption, control depth,
diffusion, as a 24 GB GPU has to).

Memory is measured, never estimated from the parameter count: on CUDA the allocator's
peak (``torch.cuda.max_memory_allocated``) from before the models are built to the end
of the step; on the CPU the increase of the process's resident set over the same span,
sampled every 2 ms from ``/proc/self/statm`` (so each stage has its own peak) and
checked against ``resource.getrusage`` (``ru_maxrss``), after the allocator has handed
its free pages back (``malloc_trim``). A CPU figure is the fp32 CPU
footprint: weights, gradients, optimiser state and activations as they would be in fp32
on a GPU, without the CUDA context and allocator slack (``CUDA_OVERHEAD_GB``).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass, field

#: GiB that a CUDA run needs beyond its tensors: context and allocator slack
CUDA_OVERHEAD_GB = 1.0
#: the GPU the SSD paper trained on (one RTX 4090): GiB
GPU_MEMORY_GB = 24.0


def param_count(module) -> int:
    """Number of parameters of ``module`` (trainable or not)."""
    return int(sum(p.numel() for p in module.parameters()))


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the system (glibc
    ``malloc_trim``), so that memory freed before a span does not hide an increase in it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):       # not glibc: the RSS increase may read low
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryMeter:
    """Peak memory over a span: CUDA allocator peak, else the process RSS increase.

    ``with MemoryMeter(device) as m: ...`` then ``m.peak_gb`` (GiB above the level at
    entry) and ``m.method``.
    """

    def __init__(self, device, dtype: str = "fp32"):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.peak_gb = 0.0
        self.method = ("torch.cuda.max_memory_allocated" if self.cuda else
                       "CPU: process peak RSS increase (/proc/self/statm sampled every 2 ms, "
                       f"checked against resource.getrusage ru_maxrss), {dtype}")

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        release_free_memory()
        self._base = _rss_bytes()
        self._maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if maxrss > self._maxrss_before:      # a new process peak inside the span
                self._peak = max(self._peak, maxrss)
            peak = self._peak - self._base
        self.peak_gb = max(0.0, peak) / 2 ** 30
        return False


@contextlib.contextmanager
def count_flops():
    """``with count_flops() as c: ...`` then ``c.total`` (FLOPs of the torch ops run)."""
    from torch.utils.flop_counter import FlopCounterMode

    class Count:
        total = 0

    counter = FlopCounterMode(display=False)
    c = Count()
    c.mode = counter                # running total: c.mode.get_total_flops()
    with counter:
        yield c
    c.total = int(counter.get_total_flops())


def clock() -> tuple[float, float]:
    """(wall seconds, process CPU seconds) now."""
    return time.perf_counter(), time.process_time()


def timed(device, fn):
    """(result of ``fn()``, wall seconds, process CPU seconds), synchronised on CUDA."""
    import torch

    sync = torch.device(device).type == "cuda"
    if sync:
        torch.cuda.synchronize(device)
    wall, cpu = clock()
    out = fn()
    if sync:
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class Stage:
    """One stage of a staged dry run (its models loaded alone)."""

    name: str
    params: dict
    flops: int
    peak_memory_gb: float | None
    seconds: float | None
    notes: list = field(default_factory=list)
    cpu_seconds: float | None = None


@dataclass
class DryRunReport:
    """What a dry run prints as its last line (see the module docstring)."""

    recipe: str
    params: dict
    input_size: dict
    batch: int
    flops_per_step: int
    peak_memory_gb: float | None
    memory_method: str
    seconds_per_step: float | None
    device: str
    dtype: str = "fp32"
    notes: list = field(default_factory=list)
    stages: list | None = None
    #: stages whose memory and time were not measured (their figures are not in
    #: peak_memory_gb / seconds_per_step, and fits_24gb is then null)
    unmeasured: list = field(default_factory=list)
    cpu_seconds_per_step: float | None = None
    #: the stages' models stay loaded together: the peak is their sum, not the largest
    resident: bool = False

    @property
    def fits_measured(self) -> bool | None:
        """Whether what was measured fits: peak + CUDA context <= 24 GiB."""
        if self.peak_memory_gb is None:
            return None
        return self.peak_memory_gb + CUDA_OVERHEAD_GB <= GPU_MEMORY_GB

    @property
    def fits_24gb(self) -> bool | None:
        return None if self.unmeasured else self.fits_measured

    def fits_basis(self) -> str:
        where = ("the measured CUDA peak" if self.memory_method.startswith("torch.cuda")
                 else f"the measured CPU peak ({self.dtype.split(' ')[0]})")
        text = (f"{where} + {CUDA_OVERHEAD_GB:g} GiB CUDA context <= {GPU_MEMORY_GB:g} GiB"
                + ((" (the stages' sum: their models stay loaded together)" if self.resident
                    else " (the largest stage)") if self.stages else ""))
        if self.unmeasured:
            text += (f"; not claimed: stage(s) {', '.join(self.unmeasured)} not measured "
                     f"here (the measured ones fit: {self.fits_measured})")
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["params_total"] = int(sum(self.params.values()))
        d["fits_24gb"] = self.fits_24gb
        d["fits_basis"] = self.fits_basis()
        if d["stages"] is None:
            del d["stages"]
        if not d["unmeasured"]:
            del d["unmeasured"]
        else:
            d["fits_24gb_measured_stages"] = self.fits_measured
        return d

    def json_line(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)


def combine_stages(recipe: str, stages: list[Stage], input_size: dict, batch: int, device,
                   method: str, dtype: str = "fp32", notes=(),
                   resident: bool = False) -> DryRunReport:
    """One report over stages run one after another: params of every stage, FLOPs
    summed, seconds summed and the peak memory the largest stage's over the stages that
    were measured (the others listed in ``unmeasured``: then no fit is claimed), or with
    ``resident`` (each stage's models stay loaded for the next) their sum."""
    params = {f"{s.name}.{k}": v for s in stages for k, v in s.params.items()}
    measured = [s for s in stages if s.peak_memory_gb is not None]
    peaks = [s.peak_memory_gb for s in measured]
    peak = (round(sum(peaks), 3) if resident else max(peaks)) if peaks else None
    return DryRunReport(
        recipe, params, input_size, batch, int(sum(s.flops for s in stages)), peak, method,
        float(sum(s.seconds or 0.0 for s in measured)) if measured else None, str(device),
        dtype, list(notes) + [f"{s.name}: {n}" for s in stages for n in s.notes],
        [asdict(s) for s in stages], [s.name for s in stages if s not in measured],
        float(sum(s.cpu_seconds or 0.0 for s in measured)) if measured else None, resident)


def print_report(report: DryRunReport) -> dict:
    """Print the report as the last line of output; returns its dict."""
    print(report.json_line(), flush=True)
    return report.to_dict()
