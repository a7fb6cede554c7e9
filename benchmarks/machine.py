"""Name the machine a measurement was taken on."""

from __future__ import annotations

import os
import platform
import re


def describe() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"model name\s*:\s*(.+)", fh.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    return info


def slug(info: dict) -> str:
    name = f"{info['gpu'] or info['cpu']}-{info['cores']}c"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
