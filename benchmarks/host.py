"""What a benchmark's figures were measured on: the CPU (name and the flags that decide bfloat16 and
AVX-512 speed), threads and versions. Hosts differ between sessions; every results file records its own."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from pathlib import Path
from typing import Any

# AVX2 only: bfloat16 products are slow (docs/training.md); AVX512-BF16 or AMX: bfloat16 is native;
# AMX-INT8: llama.cpp runs quantised weights through its AMX kernels (docs/kv-caching.md)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo() -> list[str]:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text().splitlines()
    return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The `CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is not there)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in CPU_FLAGS if flag in present]
    return []


def host_info() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat()}
