"""The real ``deployapi serve`` under attack and on a bad day: forged logs and identities, storage faults, limits."""

from __future__ import annotations

import json
import resource
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from builders import create_body
from server_process import run_command, wait_until

from deployapi.repository import Repository

pytestmark = pytest.mark.e2e


def raw_exchange(server, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are (no client library to tidy them up); return everything the server answers."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_body_of(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_path_cannot_write_a_forged_log_line_or_a_terminal_escape(start_server):
    server = start_server()
    forged = "/x%0a2026-11-26%2010:00:00,000%20INFO%20deployapi.access:%20POST%20/deployments%20201%20ok%1b[2K"
    assert status_of(raw_exchange(server, f"GET {forged} HTTP/1.1\r\nHost: x\r\n\r\n".encode())) == 404
    assert wait_until(lambda: "GET /x" in server.stderr_text)
    lines = [line for line in server.stderr_text.splitlines() if "deployapi.access" in line]
    assert len(lines) == 1, lines
    assert "\x1b" not in server.stderr_text and "/x\\n2026-11-26 10:00:00,000" in lines[0]


def test_two_identity_header_lines_are_refused_not_merged_into_one_person(start_server):
    server = start_server("--trust-remote-user", "--remote-user-header", "X-Remote-User")
    status, _, created = server.request("POST", "/deployments", create_body(requester=None),
                                        headers={"X-Remote-User": "alice"})
    assert status == 201
    body = b'{}'
    answer = raw_exchange(server, (
        f"POST /deployments/{created['id']}/approve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Remote-User: reviewer\r\nX-Remote-User: alice\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n").encode() + body)
    assert status_of(answer) == 401 and "comma" in json_body_of(answer)["detail"]
    assert server.request("GET", f"/deployments/{created['id']}", headers={"X-Remote-User": "bob"})[2][
        "status"] == "pending_approval"


def test_a_utf8_identity_header_is_stored_as_written(start_server):
    server = start_server("--trust-remote-user", "--remote-user-header", "X-Remote-User")
    body = json.dumps(create_body(requester=None)).encode()
    answer = raw_exchange(server, (
        "POST /deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Remote-User: Łukasz\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("utf-8") + body)
    assert status_of(answer) == 201 and json_body_of(answer)["requester"] == "Łukasz"


# --- storage faults -------------------------------------------------------------------


def creates(server, count: int) -> list[tuple[int, dict, dict]]:
    return [server.request("POST", "/deployments", create_body(version=f"1.{n}")) for n in range(count)]


def assert_refused_as_storage_fault(answers) -> None:
    for status, headers, body in answers:
        assert (status, body["code"]) == (503, "storage_unavailable"), body
        assert int(headers["Retry-After"]) > 0


def assert_logged_once(server) -> None:
    assert wait_until(lambda: "storage fault" in server.stderr_text)
    assert server.stderr_text.count("storage fault") == 1, server.stderr_text
    assert "Traceback" not in server.stderr_text


def test_a_removed_database_directory_stops_writes_and_health(tmp_path, start_server):
    data = tmp_path / "data"
    data.mkdir()
    server = start_server("--db", str(data / "deployapi.db"))
    assert server.request("POST", "/deployments", create_body())[0] == 201
    shutil.rmtree(data)
    assert_refused_as_storage_fault(creates(server, 20))
    assert server.request("GET", "/healthz")[0] == 503
    assert_logged_once(server)
    assert not data.exists()  # and no new, empty database was started in its place


def test_a_database_file_replaced_under_the_server_stops_writes(tmp_path, start_server):
    db = tmp_path / "deployapi.db"
    other = tmp_path / "other.db"
    server = start_server("--db", str(db))
    assert server.request("POST", "/deployments", create_body())[0] == 201
    Repository(other).close()
    other.replace(db)
    assert_refused_as_storage_fault(creates(server, 10))
    assert server.request("GET", "/healthz")[0] == 503
    assert_logged_once(server)


def test_a_wal_removed_under_the_server_stops_writes(tmp_path, start_server):
    db = tmp_path / "deployapi.db"
    server = start_server("--db", str(db))
    assert server.request("POST", "/deployments", create_body())[0] == 201
    (tmp_path / "deployapi.db-wal").unlink()  # a careless clean-up while the server runs
    assert_refused_as_storage_fault(creates(server, 10))
    assert server.request("GET", "/healthz")[0] == 503
    assert_logged_once(server)
    # Its connections still hold the removed -wal: a clean stop copies it into the file.
    assert server.stop() == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM deployments").fetchone()[0] == 1
    assert run_command("check", "--db", str(db), cwd=tmp_path).returncode == 0


def test_restarting_on_a_missing_database_warns_and_require_existing_refuses(tmp_path, start_server):
    server = start_server("--db", str(tmp_path / "mistyped.db"))
    assert wait_until(lambda: "no database at" in server.stderr_text)
    server.stop()
    result = run_command("serve", "--db", str(tmp_path / "also-missing.db"), "--require-existing", cwd=tmp_path)
    assert result.returncode == 2 and "no database at" in result.stderr
    assert not (tmp_path / "also-missing.db").exists()
    result = run_command("serve", "--db", str(tmp_path / "also-missing.db"), cwd=tmp_path,
                         env={"DEPLOYAPI_REQUIRE_EXISTING": "1"})
    assert result.returncode == 2 and not (tmp_path / "also-missing.db").exists()


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


def test_a_full_disk_answers_503_then_recovers_when_space_returns(tmp_path, start_server):
    # RLIMIT_FSIZE makes every write past 1 MiB fail as a full disk would
    # (Python ignores SIGXFSZ, so the write returns EFBIG).
    server = start_server("--db", str(tmp_path / "deployapi.db"), preexec_fn=limit_file_size(2**20))
    answers = []
    for n in range(400):
        answers.append(server.request("POST", "/deployments", create_body(version=f"1.{n}")))
        if answers[-1][0] != 201:
            break
    assert answers[0][0] == 201 and answers[-1][0] == 503, [a[0] for a in answers]
    assert server.request("GET", "/healthz")[0] == 503
    # Later writes are refused or, where they still fit, kept: each answer is true.
    answers += creates(server, 5)
    assert_refused_as_storage_fault([a for a in answers if a[0] != 201])
    assert_logged_once(server)

    resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert server.request("GET", "/healthz")[0] == 200  # its own write probe succeeds again
    assert server.request("POST", "/deployments", create_body())[0] == 201
    assert wait_until(lambda: "storage recovered" in server.stderr_text)
    acknowledged = sum(1 for status, _, _ in answers if status == 201) + 1
    assert len(server.request("GET", "/deployments?limit=200")[2]["items"]) == acknowledged


def own_tmpfs(directory, size: str) -> tuple[str, ...]:
    """A wrapper that serves from a tmpfs of its own, mounted on ``directory`` in a private mount namespace."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(directory))


def resize(server, directory, size: str) -> None:
    subprocess.run(["nsenter", "--target", str(server.process.pid), "--mount", "mount", "-o",
                    f"remount,size={size}", str(directory)], check=True, capture_output=True)


@pytest.fixture
def mount_namespaces(tmp_path):
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {tmp_path}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"needs mount namespaces (root): {probe.stderr.decode().strip()}")


@pytest.fixture(scope="module")
def fault_library(tmp_path_factory):
    """tests/e2e/fault_injection.c built for LD_PRELOAD (the machine's C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the fault-injection library")
    library = tmp_path_factory.mktemp("faults") / "fault_injection.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library),
                    str(Path(__file__).with_name("fault_injection.c")), "-ldl"], check=True, capture_output=True)
    return library


@pytest.mark.parametrize("fault", ["erofs", "eio"], ids=["read-only file system", "failing disk (I/O errors)"])
def test_a_file_system_that_stops_taking_writes_answers_503_then_recovers(tmp_path, start_server, fault_library,
                                                                         fault):
    switches = tmp_path / "faults"
    switches.mkdir()
    server = start_server("--db", str(tmp_path / "deployapi.db"),
                          env={"LD_PRELOAD": str(fault_library), "DEPLOYAPI_FAULT_DIR": str(switches)})
    assert server.request("POST", "/deployments", create_body())[0] == 201
    (switches / fault).touch()
    assert_refused_as_storage_fault(creates(server, 10))
    assert server.request("GET", "/healthz")[0] == 503
    # A read may need to write too (SQLite grows its shared-memory file with
    # pwrite), so it is answered or refused like a write: never a 500.
    status, _, body = server.request("GET", "/deployments")
    assert status == 200 or (status, body["code"]) == (503, "storage_unavailable")
    assert_logged_once(server)
    (switches / fault).unlink()
    assert server.request("GET", "/healthz")[0] == 200
    assert server.request("POST", "/deployments", create_body())[0] == 201
    assert len(server.request("GET", "/deployments")[2]["items"]) == 2


def test_a_full_tmpfs_answers_503_then_recovers_when_it_grows(tmp_path, start_server, mount_namespaces):
    data = tmp_path / "data"
    data.mkdir()
    server = start_server("--db", str(data / "deployapi.db"), wrapper=own_tmpfs(data, "1m"))
    statuses = []
    for n in range(400):
        statuses.append(server.request("POST", "/deployments", create_body(version=f"1.{n}"))[0])
        if statuses[-1] != 201:
            break
    assert statuses[0] == 201 and statuses[-1] == 503, statuses
    assert server.request("GET", "/healthz")[0] == 503
    assert_logged_once(server)
    resize(server, data, "64m")
    assert server.request("GET", "/healthz")[0] == 200
    assert server.request("POST", "/deployments", create_body())[0] == 201


# --- bounded requests ------------------------------------------------------------------


def connect(server, timeout: float = 10) -> socket.socket:
    address = urlsplit(server.url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def read_answer(connection: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            break
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))
    while len(rest) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_a_200_mib_body_is_refused_after_its_headers_without_being_read(start_server):
    server = start_server()
    with connect(server) as connection:
        connection.sendall(b"POST /deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 209715200\r\n\r\n" + b"{" * 1024)
        answer = read_answer(connection)  # answered with 1 KiB of the 200 MiB sent
    assert status_of(answer) == 413 and json_body_of(answer)["code"] == "payload_too_large"
    assert b"application/problem+json" in answer


def test_a_chunked_body_that_never_ends_is_cut_off_at_the_limit(start_server):
    server = start_server()
    with connect(server) as connection:
        connection.sendall(b"POST /deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
        sent = 0
        try:
            while sent < 50 * 2**20:  # 50 MiB at most, in 16 KiB chunks
                connection.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed
        answer = read_answer(connection)
    assert status_of(answer) == 413 and json_body_of(answer)["code"] == "payload_too_large"
    assert sent < 4 * 2**20


def test_headers_over_32_kib_are_a_431_problem(start_server):
    server = start_server()
    with connect(server) as connection:
        # Just over the limit, all of it read by the server before it answers
        # (unread bytes would make its close a reset that can eat the answer).
        connection.sendall(b"GET /deployments/" + b"a" * (32 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_answer(connection)
    assert status_of(answer) == 431 and json_body_of(answer)["code"] == "header_too_large"


def test_an_unsupported_transfer_encoding_is_the_clients_problem_not_a_server_error(start_server):
    server = start_server()
    with connect(server) as connection:
        connection.sendall(b"POST /deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: gzip\r\n\r\n")
        answer = read_answer(connection)
    problem = json_body_of(answer)
    # 501 is what HTTP prescribes for a transfer coding the server does not know;
    # the problem says what to change, and claims no server fault.
    assert status_of(answer) == 501 and problem["code"] == "bad_request"
    assert "Transfer-Encoding" in problem["detail"] and "logged" not in problem["detail"]


def test_clients_that_pipeline_and_never_read_free_their_threads_after_the_channel_timeout(start_server):
    server = start_server("--threads", "2", "--channel-timeout", "2", "--outbuf-high-watermark", "65536")
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    stuck = []
    for _ in range(4):  # twice the worker threads
        connection = connect(server)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.sendall(request * (8192 // len(request)))
        stuck.append(connection)
    try:
        # While they hold the threads, nothing else is answered; once the
        # channel timeout closes them, the server answers again.
        started = time.monotonic()
        assert wait_until(lambda: server_answers(server), timeout=20)
        assert time.monotonic() - started < 15
        assert wait_until(lambda: "took no output" in server.stderr_text, timeout=5)
    finally:
        for connection in stuck:
            connection.close()


def server_answers(server) -> bool:
    try:
        with connect(server, timeout=1) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return status_of(read_answer(connection)) == 200
    except OSError:
        return False


def test_connections_that_trickle_their_headers_are_closed_after_the_channel_timeout(start_server):
    server = start_server("--connection-limit", "20", "--channel-timeout", "2")
    trickling = [connect(server) for _ in range(25)]
    try:
        for connection in trickling:
            connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 6:  # a byte from each, every half second
            for connection in trickling:
                try:
                    connection.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.5)
        assert server_answers(server)
        assert "did not arrive within 2 s" in server.stderr_text
    finally:
        for connection in trickling:
            connection.close()


def test_reads_are_answered_while_writes_wait_and_no_write_waits_past_the_busy_timeout(start_server, tmp_path):
    db = tmp_path / "deployapi.db"
    server = start_server("--db", str(db), "--threads", "4")
    assert server.request("POST", "/deployments", create_body())[0] == 201
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
    results: list[tuple[str, int, float, str]] = []

    def send(kind):
        started = time.monotonic()
        if kind == "write":
            status, headers, body = server.request("POST", "/deployments", create_body())
        else:
            status, headers, body = server.request("GET", "/deployments?limit=1")
        results.append((kind, status, time.monotonic() - started, (body or {}).get("code", "")))

    try:
        writers = [threading.Thread(target=send, args=("write",)) for _ in range(32)]
        for thread in writers:
            thread.start()
        time.sleep(0.5)  # the writes are queued or waiting now
        readers = [threading.Thread(target=send, args=("read",)) for _ in range(5)]
        for thread in readers:
            thread.start()
        for thread in readers + writers:
            thread.join(30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    reads = [r for r in results if r[0] == "read"]
    writes = [r for r in results if r[0] == "write"]
    assert len(reads) == 5 and all(status == 200 and took < 2 for _, status, took, _ in reads), reads
    assert len(writes) == 32
    assert all((status, code) == (503, "database_busy") for _, status, _, code in writes), writes
    assert max(took for _, _, took, _ in writes) < 7, sorted(took for *_, took, _ in writes)
