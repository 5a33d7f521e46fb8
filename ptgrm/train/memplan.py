"""``run.max_memory``: measure one training step of the run's own networks, pick the fastest
micro-batch / checkpointing setting that fits, or name the crop that would.

What is measured, per device:
    CUDA  ``torch.cuda.max_memory_allocated`` over the step: weights, gradients, optimizer state
          and activations, everything the run holds on the card.
    CPU   the process's peak resident memory over the step (``VmHWM`` after resetting it through
          ``/proc/self/clear_refs``, with freed heap pages returned first by ``malloc_trim``) above
          the resident memory before it, plus the bytes of the weights, gradients and optimizer
          state (counted from their tensors). The Python process itself (torch's libraries, the
          data) is not in the budget. `benchmarks/bench_memory.py` checks this in-process figure
          against a fresh process's peak RSS.

Each measurement is a real step (forward, loss, backward, Adam step) on a synthetic batch of the
run's shapes, after one warm step (so gradients and Adam's state exist, as in every later step);
the networks' weights, gradients and the RNG are restored afterwards, and a throwaway optimizer is
used, so the run itself starts exactly as it would without a plan.
"""
from __future__ import annotations

import ctypes
import gc
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ptg.pipeline.core.errors import PtgError

from .memory import set_checkpointing

GiB = 2**30


class MemoryPlanError(PtgError):
    """Even the leanest setting does not fit ``run.max_memory``."""


@dataclass
class Measure:
    micro_batch: int
    checkpointing: str
    crop: int
    peak: int  # bytes: weights, gradients, optimizer state and the step's activations
    static: int  # bytes held before the step: weights, gradients, optimizer state
    seconds: float  # one micro-batch: forward, backward, optimizer step

    @property
    def activations(self) -> int:
        return self.peak - self.static


@dataclass
class Probe:
    """What a measurement runs: the run's networks and its step on a synthetic micro-batch.

    Attributes:
        f, r: the networks (R None without one); their state is restored after each measurement.
        make_opt: a fresh optimizer over the trained parameters (the run's groups and settings).
        step_loss: ``step_loss(n, crop)``: forward and loss of a synthetic micro-batch of ``n`` crops.
        device: where the run trains.
        extra_static: bytes the run holds besides F, R and their optimizer (EMA copies; CPU only,
            CUDA counts everything allocated).
    """

    f: nn.Module
    r: nn.Module | None
    make_opt: Callable[[], torch.optim.Optimizer]
    step_loss: Callable[[int, int], torch.Tensor]
    device: torch.device
    extra_static: int = 0

    def measure(self, micro_batch: int, mode: str, crop: int) -> Measure:
        set_checkpointing(self.f, self.r, mode)
        nets = [m for m in (self.f, self.r) if m is not None]
        saved = [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in nets]
        rng = torch.get_rng_state()
        opt = self.make_opt()
        try:
            self._step(opt, micro_batch, crop)  # warm: gradients and Adam's state exist from here on
            static_tensors = _tensor_bytes(nets, opt) + self.extra_static
            with _PeakMemory(self.device) as peak:
                t0 = time.perf_counter()
                self._step(opt, micro_batch, crop)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                seconds = time.perf_counter() - t0
        finally:
            for m in nets:
                m.zero_grad(set_to_none=True)
            del opt
            for m, s in zip(nets, saved):
                m.load_state_dict(s)
            torch.set_rng_state(rng)
        static = peak.base if self.device.type == "cuda" else static_tensors
        total = peak.peak if self.device.type == "cuda" else static + peak.peak - peak.base
        return Measure(micro_batch, mode, crop, int(total), int(static), seconds)

    def _step(self, opt: torch.optim.Optimizer, n: int, crop: int) -> None:
        loss = self.step_loss(n, crop)
        loss.backward()
        opt.step()


def _tensor_bytes(nets: list[nn.Module], opt: torch.optim.Optimizer) -> int:
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    for m in nets:
        for p in m.parameters():
            add(p)
            add(p.grad)
        for b in m.buffers():
            add(b)
    for state in opt.state.values():
        for v in state.values():
            add(v)
    return total


class _PeakMemory:
    """``with _PeakMemory(device) as p:`` -> ``p.base`` (before) and ``p.peak`` (highest during), bytes."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = self.peak = 0

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            self.base = reset_peak_rss()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = peak_rss()


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc), so reused memory shows up in the peak again."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> int:
    """Reset the process's peak resident memory to the current one; return it (bytes).

    Raises:
        PtgError: the system offers no way to (Linux: ``/proc/self/clear_refs``, kernel 4.0+).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        raise PtgError(f"run.max_memory on the CPU needs /proc/self/clear_refs to measure peak memory ({exc}); "
                       "set run.micro_batch and run.checkpointing yourself instead") from None
    return _status("VmRSS")


def peak_rss() -> int:
    """The process's peak resident memory since the last `reset_peak_rss` (bytes)."""
    return _status("VmHWM")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise PtgError(f"/proc/self/status has no {key}; run.max_memory cannot measure memory here")


@dataclass
class Plan:
    micro_batch: int
    checkpointing: str
    peak: int  # measured bytes of the chosen setting
    budget: int
    batch: int  # the batch each process trains on per optimizer step

    @property
    def line(self) -> str:
        n = math.ceil(self.batch / self.micro_batch)
        unit, scale = ("GiB", GiB) if self.budget >= GiB else ("MiB", 2**20)
        return (f"micro-batch {self.micro_batch} × {n}, checkpointing {self.checkpointing}: "
                f"{self.peak / scale:.1f} of {self.budget / scale:.3g} {unit}")


def _size(b: int) -> str:
    return f"{b / GiB:.1f} GiB" if b >= GiB else f"{b / 2**20:.1f} MiB"


def micro_batch_sizes(batch: int) -> list[int]:
    """``batch``, then halved (rounded up) down to 1: the sizes the plan considers."""
    sizes = [batch]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def plan_memory(probe: Probe, budget: int, batch: int, crop: int, modes: list[str], multiple: int,
                measured: list[Measure]) -> Plan:
    """The fastest (micro-batch, checkpointing) whose measured step fits ``budget``.

    Each mode is measured at micro-batches 1 and 2; memory and time per micro-batch are linear in its
    size, which predicts the others; the fastest predicted to fit is then measured itself and taken
    if it fits (else the next). ``modes`` is ordered from the least to the most checkpointing.
    Every measurement is appended to ``measured``.

    Raises:
        MemoryPlanError: micro-batch 1 with the last mode does not fit (names the crop that would).
    """
    cache: dict[tuple[int, str], Measure] = {}

    def get(mb: int, mode: str) -> Measure:
        if (mb, mode) not in cache:
            cache[mb, mode] = probe.measure(mb, mode, crop)
            measured.append(cache[mb, mode])
        return cache[mb, mode]

    options = []
    floor = {mb: 0.0 for mb in micro_batch_sizes(batch)}
    for mode in modes:
        a, b = get(1, mode), get(min(2, batch), mode)
        for mb in floor:
            mem = a.peak + (b.peak - a.peak) * (mb - 1)
            secs = math.ceil(batch / mb) * max(a.seconds + (b.seconds - a.seconds) * (mb - 1), 1e-9)
            floor[mb] = secs = max(secs, floor[mb])  # recomputing more is never faster: timing noise aside
            options.append((secs, mb, mode, mem))
    for _, mb, mode, mem in sorted(options, key=lambda o: o[0]):
        if mem <= budget and get(mb, mode).peak <= budget:
            return Plan(mb, mode, get(mb, mode).peak, budget, batch)
    fits = [m for m in cache.values() if m.peak <= budget]
    if fits:  # predictions were off: the fastest setting measured to fit
        best = min(fits, key=lambda m: math.ceil(batch / m.micro_batch) * m.seconds)
        return Plan(best.micro_batch, best.checkpointing, best.peak, budget, batch)
    raise MemoryPlanError(_no_fit(probe, budget, crop, modes[-1], multiple, get(1, modes[-1]), measured))


def _no_fit(probe: Probe, budget: int, crop: int, mode: str, multiple: int, least: Measure,
            measured: list[Measure]) -> str:
    """The one-line refusal: what the leanest setting needs, and the largest crop measured to fit."""
    head = (f"run.max_memory={_size(budget)} is too little: even micro-batch 1 with checkpointing {mode} needs "
            f"{_size(least.peak)} at crop {crop}")
    side = crop
    for _ in range(4):
        room = budget - least.static
        if room <= 0 or least.activations <= 0:
            break
        side = min(side - multiple, int(side * math.sqrt(room / least.activations)) // multiple * multiple)
        if side < max(multiple, 8):
            break
        m = probe.measure(1, mode, side)
        measured.append(m)
        if m.peak <= budget:
            return f"{head}; crop {side} fits ({_size(m.peak)}): pass --crop {side} or a larger --max-memory"
        least = m
    return (f"{head}, and no crop fits (the weights, gradients and optimizer state alone take {_size(least.static)}); "
            "pass a larger --max-memory or a smaller network")


def record(plan: Plan, spec: str, device: torch.device, measured: list[Measure]) -> dict[str, Any]:
    """What the run keeps of its plan (``run.memory_plan`` in config.yaml and every checkpoint)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"max_memory": spec, "budget": plan.budget, "device": name, "micro_batch": plan.micro_batch,
            "checkpointing": plan.checkpointing, "peak": plan.peak, "line": plan.line,
            "measured": [asdict(m) for m in measured]}
