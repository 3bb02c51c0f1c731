"""Running deployapi anywhere: under waitress-serve and gunicorn (the factory, the access log), --version,
a port in use, filesystem errors, and check on a read-only copy."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from builders import create_body
from server_process import http_request, run_command, wait_until

import deployapi

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
TEXT_ACCESS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO deployapi\.access: "
                         r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) [\d.]+ms request_id=(?P<id>\S+)$")


class Hosted:
    """A WSGI server other than ``deployapi serve``, started on a free port; its stdout and stderr are kept."""

    def __init__(self, *command: str, cwd: Path, env: dict[str, str], url_line: str):
        self.process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=lines.extend, args=(stream,), daemon=True)
                        for lines, stream in ((self.stdout, self.process.stdout), (self.stderr, self.process.stderr))]
        for reader in self.readers:
            reader.start()
        found = wait_until(lambda: re.search(url_line, "".join(self.stderr)) or self.process.poll() is not None, 30)
        match = re.search(url_line, "".join(self.stderr))
        if not (found and match):
            self.stop()
            raise AssertionError(f"{command[0]} did not start: {''.join(self.stderr)}")
        self.url = match.group(1)

    def request(self, method: str, path: str, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        status, _, answer = http_request(method, self.url + path, data, headers)
        return status, json.loads(answer) if answer else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self.readers:
            reader.join(5)
        return code


@pytest.fixture
def hosted(tmp_path):
    started: list[Hosted] = []

    def start(server: str, app: str, env: dict[str, str], *options: str) -> Hosted:
        env = {"DEPLOYAPI_DB": str(tmp_path / "hosted.db"), **env}
        if server == "waitress-serve":
            command = [str(BIN / "waitress-serve"), "--host=127.0.0.1", "--port=0", *options, app]
            line = r"Serving on (http://127\.0\.0\.1:\d+)"
        else:
            command = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "2", *options, app]
            line = r"Listening at: (http://127\.0\.0\.1:\d+)"
        started.append(Hosted(*command, cwd=tmp_path, env=env, url_line=line))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def access_lines(text: str) -> list[tuple[str, str, int, str]]:
    return [(m["method"], m["path"], int(m["status"]), m["id"])
            for m in map(TEXT_ACCESS.match, text.splitlines()) if m]


def a_short_session(server: Hosted) -> list[tuple[str, str, int, str]]:
    """A 201, a 200 and a 422 (the production set from the environment), each with a request id of its own."""
    status, created = server.request("POST", "/deployments", create_body(environment="prod"),
                                     {"X-Request-ID": "run-1"})
    assert status == 201, created
    assert server.request("GET", f"/deployments/{created['id']}", headers={"X-Request-ID": "run-2"})[0] == 200
    status, refused = server.request("POST", "/deployments", create_body(environment="prod", risk=None),
                                     {"X-Request-ID": "run-3"})
    assert status == 422, refused
    return [("POST", "/deployments", 201, "run-1"), ("GET", f"/deployments/{created['id']}", 200, "run-2"),
            ("POST", "/deployments", 422, "run-3")]


# --- the factory and the access log under other servers ---------------------------------------------------

@pytest.mark.parametrize(("server", "app", "options"), [
    pytest.param("waitress-serve", "deployapi:app_from_environment", ("--call",), id="waitress-serve --call factory"),
    pytest.param("waitress-serve", "deployapi.wsgi:app", (), id="waitress-serve module app"),
    pytest.param("gunicorn", "deployapi:app_from_environment()", (), id="gunicorn factory()"),
    pytest.param("gunicorn", "deployapi.wsgi:app", (), id="gunicorn module app"),
])
def test_other_servers_serve_the_environments_database_and_write_the_access_log(tmp_path, hosted, server, app,
                                                                                   options):
    running = hosted(server, app, {"DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "prod"}, *options)
    expected = a_short_session(running)
    assert wait_until(lambda: len(access_lines("".join(running.stderr))) >= 3)
    # Each request once, in deployapi serve's text format, though the host adds a root handler of its own.
    assert access_lines("".join(running.stderr)) == expected
    assert (tmp_path / "hosted.db").is_file() and not (tmp_path / "deployapi.db").exists()


def test_the_json_format_asked_for_is_written_under_waitress_serve(hosted):
    running = hosted("waitress-serve", "deployapi:app_from_environment",
                     {"DEPLOYAPI_LOG_FORMAT": "json", "DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "prod"}, "--call")
    expected = a_short_session(running)

    def entries():
        return [json.loads(line) for line in "".join(running.stderr).splitlines()
                if line.startswith("{") and '"deployapi.access"' in line]

    assert wait_until(lambda: len(entries()) >= 3)
    assert [(e["method"], e["path"], e["status"], e["request_id"]) for e in entries()] == expected


def test_a_logging_configuration_of_the_host_is_kept(tmp_path, hosted):
    config = tmp_path / "logging.json"
    # gunicorn's own loggers keep the handlers its defaults give them; the root logger gets the host's.
    config.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"host": {"format": "HOST %(name)s: %(message)s"}},
        "handlers": {
            "out": {"class": "logging.StreamHandler", "formatter": "host", "stream": "ext://sys.stdout"},
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["out"]},
    }))
    running = hosted("gunicorn", "deployapi.wsgi:app", {"DEPLOYAPI_PRODUCTION_ENVIRONMENTS": "prod"},
                     "--log-config-json", str(config))
    a_short_session(running)
    assert wait_until(lambda: "".join(running.stdout).count("HOST deployapi.access: ") >= 3)
    assert "HOST deployapi.access: POST /deployments 201 " in "".join(running.stdout)
    assert not access_lines("".join(running.stderr))  # deployapi added no handler of its own


def test_create_app_called_without_arguments_names_the_factory_and_creates_nothing(tmp_path):
    result = subprocess.run([str(BIN / "waitress-serve"), "--port=0", "--call", "deployapi:create_app"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "deployapi:app_from_environment" in result.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


# --- deployapi --version -----------------------------------------------------------------------------------

def test_version_prints_the_version_of_the_code_and_of_what_it_runs_on(tmp_path):
    for flag in ("--version", "-V"):
        result = run_command(flag, cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == ""
        assert re.fullmatch(rf"deployapi {re.escape(deployapi.__version__)} \(Python [\d.]+\S*, SQLite [\d.]+, "
                            r"waitress [\d.]+\S*, Werkzeug [\d.]+\S*\)\n", result.stdout), result.stdout
    # The installed metadata is read from the same place.
    assert importlib.metadata.version("deployapi") == deployapi.__version__


def test_version_from_a_source_checkout_that_is_not_installed(tmp_path):
    # Only the checkout on the path: the installed package and its metadata are not what answers.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "deployapi", checkout / "deployapi")
    result = subprocess.run([sys.executable, "-I", "-c",
                             f"import sys; sys.path.insert(0, {str(checkout)!r}); import deployapi.cli as c; "
                             "print(c.__file__); c.main(['--version'])"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    where, line = result.stdout.splitlines()
    assert where.startswith(str(checkout)) and line.startswith(f"deployapi {deployapi.__version__} (")


# --- a port in use -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("db", [None, "data.db"], ids=["default ./deployapi.db", "--db"])
def test_a_port_in_use_creates_no_database_file(tmp_path, db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command("serve", "--port", str(port), *(("--db", db) if db else ()), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"deployapi: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert list(tmp_path.iterdir()) == []


# --- filesystem errors name the path and the reason ---------------------------------------------------------

@pytest.fixture
def places(tmp_path, read_only_directory):
    """Locations that cannot be used, each with the reason deployapi must give."""
    (tmp_path / "file").write_text("a regular file\n")
    (tmp_path / "ro").mkdir()
    read_only_directory(tmp_path / "ro")
    return {
        "missing directory": (tmp_path / "missing" / "x.db",
                              f"the directory {str(tmp_path / 'missing')!r} does not exist"),
        "under a regular file": (tmp_path / "file" / "x.db", f"{str(tmp_path / 'file')!r} is not a directory"),
        "a directory": (tmp_path, "it is a directory"),
        "read-only directory": (tmp_path / "ro" / "x.db",
                                f"permission denied: cannot create files in {str(tmp_path / 'ro')!r}"),
    }


@pytest.fixture
def served_db(tmp_path_factory):
    """A deployapi database with one deployment, made by the app, outside the test's directory."""
    path = tmp_path_factory.mktemp("source") / "live.db"
    app = deployapi.create_app(path)
    try:
        from werkzeug.test import Client
        assert Client(app).post("/deployments", json=create_body()).status_code == 201
    finally:
        app.close()
    return path


PLACES = ("missing directory", "under a regular file", "a directory", "read-only directory")
# A read-only directory stops only what writes: check and backup's source read, as the copy tests below show.
FILE_ERRORS = [pytest.param(command, place, id=f"{command}, {place}")
               for command in ("serve --db", "relay --db", "check --db", "backup DEST", "backup --db")
               for place in PLACES if not (place == "read-only directory" and command in ("check --db", "backup --db"))]


@pytest.mark.parametrize(("command", "place"), FILE_ERRORS)
def test_every_command_names_the_file_and_the_reason_it_cannot_be_used(tmp_path, places, served_db, command, place):
    path, reason = places[place]
    config = tmp_path / "hooks.toml"
    config.write_text('[[webhooks]]\nname = "ci"\nurl = "http://127.0.0.1:9/"\n')
    args, verb = {
        "serve --db": (["serve", "--port", "0", "--db", str(path)], "deployapi: cannot open database"),
        "relay --db": (["relay", "--config", str(config), "--db", str(path)], "deployapi relay: cannot open database"),
        "check --db": (["check", "--db", str(path)], "deployapi check: cannot read"),
        "backup DEST": (["backup", "--db", str(served_db), str(path)], "deployapi backup: cannot write"),
        "backup --db": (["backup", "--db", str(path), str(tmp_path / "copy.db")], "deployapi backup: cannot read"),
    }[command]
    before = sorted(tmp_path.rglob("*"))
    result = run_command(*args, cwd=tmp_path)
    assert result.returncode == 2
    if command == "backup DEST" and place == "a directory":
        assert result.stderr == f"deployapi backup: {str(path)!r} exists already; choose a new file name\n"
    else:
        assert result.stderr == f"{verb} {str(path)!r}: {reason}\n"
    assert sorted(tmp_path.rglob("*")) == before


def test_an_existing_file_that_cannot_be_written_is_named_with_the_reason(tmp_path, served_db, read_only_directory):
    (tmp_path / "ro").mkdir()
    shutil.copy(served_db, tmp_path / "ro" / "live.db")
    read_only_directory(tmp_path / "ro")
    db = tmp_path / "ro" / "live.db"
    result = run_command("serve", "--port", "0", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2
    # The file itself is refused: by its mode, or as root by the immutable attribute.
    assert result.stderr in (f"deployapi: cannot use database {str(db)!r}: permission denied\n",
                             f"deployapi: cannot use database {str(db)!r}: operation not permitted\n")


@pytest.mark.parametrize(("contents", "reason"), [
    pytest.param(None, "cannot read the file: No such file or directory", id="missing"),
    pytest.param("dir", "cannot read the file: Is a directory", id="a directory"),
    pytest.param("under a file", "cannot read the file: Not a directory", id="under a regular file"),
])
def test_a_configuration_file_that_cannot_be_read_is_named_with_the_reason(tmp_path, contents, reason):
    path = {None: tmp_path / "missing.toml", "dir": tmp_path,
            "under a file": tmp_path / "file" / "policy.toml"}[contents]
    (tmp_path / "file").write_text("a regular file\n")
    result = run_command("serve", "--port", "0", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == f"deployapi: {path}: {reason}\n"
    assert not (tmp_path / "deployapi.db").exists()


# --- check on a read-only copy of a WAL database ------------------------------------------------------------

def copy_while_served(server, directory: Path, suffixes: tuple[str, ...]) -> None:
    """Copy the served database with cp, as an operator would: the file and, as asked, its -wal and -shm."""
    directory.mkdir()
    for suffix in suffixes:
        shutil.copy(server.db + suffix, directory / ("live.db" + suffix))


@pytest.fixture
def busy_server(tmp_path, start_server):
    """A server whose three deployments are still in its -wal (no checkpoint has copied them into the file)."""
    db = tmp_path / "served" / "live.db"
    db.parent.mkdir()
    server = start_server("--db", str(db))
    server.db = str(db)
    for number in range(3):
        assert server.request("POST", "/deployments", create_body(version=f"1.0.{number}"))[0] == 201
    assert Path(server.db + "-wal").stat().st_size > 0
    return server


@pytest.mark.parametrize("suffixes", [("", "-wal"), ("", "-wal", "-shm")], ids=["file and -wal", "with its -shm"])
def test_check_reads_a_read_only_copy_with_the_commits_of_its_wal(tmp_path, busy_server, read_only_directory,
                                                                  suffixes):
    """The copy's directory refuses new files for the user running check (mode 555, or as root the immutable
    attribute), which is what stops SQLite from creating the -shm it locks with; check must still read the
    three deployments that only the -wal holds."""
    copy = tmp_path / "copy"
    copy_while_served(busy_server, copy, suffixes)
    read_only_directory(copy)
    result = run_command("check", "--db", str(copy / "live.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"{copy / 'live.db'}: 3 deployments, 3 events; all checks passed"
    note = [line for line in result.stdout.splitlines() if line.startswith("note ")]
    # Without a -shm the copy is read without locks, and the report says so; with one, SQLite reads it as usual.
    assert len(note) == ("-shm" not in suffixes)
    assert sorted(p.name for p in copy.iterdir()) == sorted("live.db" + s for s in suffixes)


def test_the_main_file_alone_holds_none_of_the_deployments_the_wal_holds(tmp_path, busy_server, read_only_directory):
    # What the test above would see if check ignored the -wal (as SQLite's immutable=1 does).
    copy = tmp_path / "copy"
    copy_while_served(busy_server, copy, ("",))
    read_only_directory(copy)
    result = run_command("check", "--db", str(copy / "live.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{copy / 'live.db'}: 0 deployments, 0 events;")


def test_backup_copies_a_read_only_copy_with_the_commits_of_its_wal(tmp_path, busy_server, read_only_directory):
    copy = tmp_path / "copy"
    copy_while_served(busy_server, copy, ("", "-wal"))
    read_only_directory(copy)
    result = run_command("backup", "--db", str(copy / "live.db"), str(tmp_path / "again.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"{tmp_path / 'again.db'}: 3 deployments, 3 events; all checks passed"
