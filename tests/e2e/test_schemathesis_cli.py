"""The Schemathesis command of docs/api.md, against the real server: its settings and hooks load and pass."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))

pytestmark = pytest.mark.e2e


def test_the_documented_schemathesis_run_passes_against_deployapi_serve(start_server, tmp_path):
    server = start_server("--db", str(tmp_path / "schemathesis.db"))
    # The documented command with a small budget: tests/conformance runs the full one
    # on the WSGI app; this proves the file, its hooks and the CLI agree.
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", "tests/conformance/schemathesis.toml", "run", f"{server.url}/openapi.json",
         "--max-examples", "5", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert str(ROOT / "tests" / "conformance" / "schemathesis.toml") in result.stdout
    generated, passed = re.search(r"(\d+) generated, (\d+) passed", result.stdout).groups()
    assert generated == passed and int(generated) > 500
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in result.stdout, phase
