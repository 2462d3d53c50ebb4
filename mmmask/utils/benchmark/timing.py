"""Timing helpers: side-by-side medians with warm-up, the machine description, peak memory.

Every figure of the benchmark is a *ratio* of two things measured in one run, interleaved
(A, B, A, B, ...) after a warm-up, so that a loaded machine slows both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["Timing", "time_side_by_side", "time_one", "machine_info", "sync"]


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each repeat of one measured callable; ``median`` is the figure used."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def as_dict(self) -> dict:
        return {"median_s": self.median, "runs_s": [round(s, 5) for s in self.seconds]}


def _clock(fn: Callable[[], object], device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_side_by_side(fns: dict[str, Callable[[], object]], *, repeats: int = 3,
                      warmup: int = 1, device=None) -> dict[str, Timing]:
    """Median wall time of each callable, run interleaved ``repeats`` times after ``warmup``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got {repeats}, {warmup}")
    out = {name: Timing(name) for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            _clock(fn, device)
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].seconds.append(_clock(fn, device))
    return out


def time_one(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1,
             device=None) -> Timing:
    """:func:`time_side_by_side` for a single callable."""
    return time_side_by_side({"fn": fn}, repeats=repeats, warmup=warmup, device=device)["fn"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, load, torch/python versions and the device the benchmark ran on."""
    info = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
