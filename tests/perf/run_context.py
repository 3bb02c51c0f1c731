"""What a benchmark report says about where it ran: the machine and the code measured."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from pathlib import Path


def machine_description() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"nproc {len(os.sched_getaffinity(0))} ({model}), {mem_gib:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, sqlite3.sqlite_version {sqlite3.sqlite_version}, "
            f"waitress {importlib.metadata.version('waitress')}, Werkzeug {importlib.metadata.version('werkzeug')}")


def code_description() -> str:
    """Which deployapi was measured: its directory, and its commit when that is a git checkout."""
    import deployapi

    root = Path(deployapi.__file__).resolve().parent.parent
    described = f"deployapi from {root}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "deployapi", "schema.sql"],
                               capture_output=True, text=True, check=True).stdout.strip()
        described += f" at commit {commit}" + (" with uncommitted changes to deployapi/ or schema.sql" if dirty else "")
    return described
