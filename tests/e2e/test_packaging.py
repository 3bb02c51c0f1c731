"""What ``pip install .`` puts on a machine: the wheel carries the schema and serves from anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("deployapi-*.whl")
    return built


def test_the_wheel_carries_the_top_level_schema_unchanged(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("deployapi/_schema/schema.sql")
        names = archive.namelist()
    assert packaged == (ROOT / "schema.sql").read_bytes()
    assert not any(name.startswith(("tests/", "docs/")) for name in names)
    # deployapi._schema is mapped onto the project root (setup.cfg): nothing but
    # the schema may ride along, e.g. a stray top-level .py file.
    assert [n for n in names if n.startswith("deployapi/_schema/")] == ["deployapi/_schema/schema.sql"]
    assert "deployapi/openapi.json" in names


def test_the_wheel_has_the_version_written_in_the_package(wheel):
    # setup.cfg reads deployapi.__version__ (what deployapi --version prints) rather than repeating it.
    from deployapi import __version__

    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"deployapi-{__version__}.dist-info/METADATA").decode()
    assert wheel.name == f"deployapi-{__version__}-py3-none-any.whl"
    assert f"\nVersion: {__version__}\n" in metadata


def test_the_installed_wheel_serves_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the unpacked wheel (plus werkzeug and waitress from this environment)
    # is importable: not the checkout.
    script = (
        "import sys, deployapi, werkzeug.test as t;"
        f"assert deployapi.__file__.startswith({str(site)!r}), deployapi.__file__;"
        "app = deployapi.create_app('deployapi.db');"
        "r = t.Client(app).post('/deployments', json={'service': 's', 'environment': 'dev', 'version': '1',"
        " 'requester': 'a', 'work_refs': ['W-1'], 'rollback_plan': 'undo'});"
        "print(r.status_code)"
    )
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {script}"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "201", result.stderr
    assert (elsewhere / "deployapi.db").is_file()
