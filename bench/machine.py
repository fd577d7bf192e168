"""What machine a benchmark ran on: every figure in RESULTS.md states the CPU next to it."""

from __future__ import annotations

import subprocess


def cpu_model() -> str:
    """``lscpu``'s model name (or /proc/cpuinfo's; "unknown" when neither answers)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"
