"""The real ``deployapi serve`` under attack and on a bad day: forged logs and identities, storage faults, limits."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
from builders import create_body
from server_process import wait_until

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
