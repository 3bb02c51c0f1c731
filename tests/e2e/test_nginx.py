"""nginx in front of ``deployapi serve``, configured by the blocks of docs/operations.md, under attack.

The configuration is read from the page itself, so the documented set-up is the
tested one. The test serves plain HTTP on a free loopback port instead of 443
with TLS: TLS changes nothing about how nginx buffers and times out clients,
and a certificate would only add set-up. The attackers connect from 127.0.0.2
and the ordinary client from 127.0.0.1, so that nginx's per-address limits
count them apart. The ``without nginx`` tests run the same attacks against
waitress directly: that they block it is why the proxy is documented.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from builders import create_body
from server_process import http_request, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"
SECTION = ("## Behind a reverse proxy (nginx)", "### Under a path prefix")
ATTACKER = "127.0.0.2"
CREDENTIALS = ("ops", "s3cret")
AUTHORIZATION = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
THREADS = 4
# Answers the slow readers ask for: a listing of deployments with long texts
# (about 0.8 MB), so that what one pipelined connection asks for is many times
# waitress's output buffer for a connection (16 MiB).
BULKY = {"rollback_plan": "r" * 10_000, "risk": "k" * 10_000}
BULKY_LISTING = "/deployments?limit=40"
SLOW_READERS = 2 * THREADS
FLOOD = 150
PROMPT = 3.0  # seconds within which an ordinary request must be answered


@dataclass
class Nginx:
    url: str
    error_log: Path


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    reason = "nginx is not installed (Debian: apt-get install nginx; .ci/run installs it when run as root)"
    if os.environ.get("DEPLOYAPI_REQUIRE_NGINX") == "1":
        pytest.fail(f"DEPLOYAPI_REQUIRE_NGINX=1 but {reason}")
    pytest.skip(reason)


def documented_blocks() -> tuple[list[str], list[str]]:
    """The ``nginx`` blocks of the section: (main context, http context)."""
    text = OPERATIONS.read_text()
    start = text.index(SECTION[0])
    section = text[start:text.index(SECTION[1], start)]
    blocks = re.findall(r"^```nginx\n(.*?)^```", section, flags=re.M | re.S)
    main = [block for block in blocks if re.search(r"^events\s*\{", block, flags=re.M)]
    return main, [block for block in blocks if block not in main]


def adapted(block: str, replacements: list[tuple[str, str]]) -> str:
    """``block`` with each pattern replaced; a pattern that no longer matches fails the test."""
    for pattern, replacement in replacements:
        block, count = re.subn(pattern, replacement, block, flags=re.M)
        assert count, f"docs/operations.md no longer has {pattern!r} where the test adapts it"
    return block


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def nginx(tmp_path, start_server):
    """The documented nginx in front of a real ``deployapi serve``: yields (Nginx, Server)."""
    binary = nginx_binary()
    server = start_server("--threads", str(THREADS))
    upstream = urlsplit(server.url).netloc
    root = tmp_path / "nginx"
    (root / "temp").mkdir(parents=True)
    (root / "htpasswd").write_text(f"{CREDENTIALS[0]}:{{PLAIN}}{CREDENTIALS[1]}\n")
    port = free_port()
    main, http = documented_blocks()
    server_block = [
        # A small, fixed send buffer: the kernel holds little of an answer, so
        # that what holds the rest for a slow reader is nginx's buffering.
        (r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{port} sndbuf=32k;"),
        (r"^\s*ssl_certificate(_key)?\s.*\n", ""),
        (r"server 127\.0\.0\.1:8080;", f"server {upstream};"),
        (r"/var/log/nginx/deployapi\.access\.log", str(root / "access.log")),
        (r"/etc/nginx/deployapi\.htpasswd", str(root / "htpasswd")),
    ]
    http = [adapted(block, server_block) if "server {" in block else block for block in http]
    # As root, nginx's workers would run as nobody, who cannot enter tmp_path.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {directive}_temp_path {root / 'temp' / name};\n" for directive, name in
                         (("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"),
                          ("uwsgi", "uwsgi"), ("scgi", "scgi")))
    conf = root / "nginx.conf"
    conf.write_text(
        f"{user}\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} info;\n"
        + "\n".join(main)
        + f"\nhttp {{\n{temp_paths}" + "\n".join(http) + "}\n")
    command = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=20)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _accepts(port)), (root / "error.log").read_text()
        yield Nginx(f"http://127.0.0.1:{port}", root / "error.log"), server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def timed_request(url: str, body: dict | None = None, timeout: float = PROMPT) -> tuple[int, float]:
    """(status, seconds) of one ordinary request from 127.0.0.1; no answer in time is status 0."""
    data = None if body is None else json.dumps(body).encode()
    started = time.monotonic()
    try:
        status = http_request("GET" if body is None else "POST", url, data, {"Authorization": AUTHORIZATION},
                              timeout=timeout)[0]
    except OSError:
        status = 0
    return status, time.monotonic() - started


def ordinary_traffic(url: str) -> list[tuple[str, int, float]]:
    """20 health checks and a create, one after another: (what, status, seconds)."""
    answers = [("GET /healthz", *timed_request(f"{url}/healthz")) for _ in range(20)]
    answers.append(("POST /deployments", *timed_request(f"{url}/deployments", create_body())))
    return answers


def assert_prompt(answers: list[tuple[str, int, float]], expected=(200, 201)) -> None:
    slow = [answer for answer in answers if answer[1] not in expected or answer[2] > PROMPT]
    assert not slow, slow
    print(f"ordinary requests: {len(answers)}, slowest {max(seconds for *_, seconds in answers) * 1000:.0f} ms")


def attacker_socket(host: str, port: int) -> socket.socket:
    connection = socket.socket()
    # A small receive buffer: the client's kernel takes little of what it is sent.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.bind((ATTACKER, 0))
    connection.connect((host, port))
    return connection


@contextmanager
def slow_readers(url: str, path: str = BULKY_LISTING, count: int = SLOW_READERS):
    """``count`` connections that each pipeline 8 KiB of ``GET path`` and never read an answer."""
    parts = urlsplit(url)
    request = (f"GET {path} HTTP/1.1\r\nHost: deploy.example.com\r\n"
               f"Authorization: {AUTHORIZATION}\r\n\r\n").encode()
    with ExitStack() as stack:
        for _ in range(count):
            connection = stack.enter_context(attacker_socket(parts.hostname, parts.port))
            connection.sendall(request * (8192 // len(request)))
        yield


@contextmanager
def header_flood(url: str, count: int = FLOOD):
    """``count`` connections whose request line never ends; yields a function that sends one more byte on each."""
    parts = urlsplit(url)
    with ExitStack() as stack:
        connections = [stack.enter_context(attacker_socket(parts.hostname, parts.port)) for _ in range(count)]

        def trickle() -> int:
            """Send one more byte on every connection still open; return how many are."""
            still_open = 0
            for connection in connections:
                try:
                    connection.send(b"G")
                    still_open += 1
                except OSError:
                    pass
            return still_open

        trickle()
        yield trickle


def create_bulky_deployments(server, count: int = 40) -> None:
    for index in range(count):
        status, _, _ = server.request("POST", "/deployments", create_body(version=f"1.0.{index}", **BULKY))
        assert status == 201


def unread_answer_bytes(server) -> int:
    """Bytes deployapi has written that its clients have not read yet (Linux's /proc/net/tcp).

    Both ends are counted: the queue deployapi's socket has not sent, and the
    queue the client's socket has received but the client has not read.
    """
    port = urlsplit(server.url).port
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state, queues = line.split()[1:5]
        if state != "01":  # ESTABLISHED
            continue
        unsent, unread = (int(queue, 16) for queue in queues.split(":"))
        total += unsent if int(local.split(":")[1], 16) == port else 0
        total += unread if int(remote.split(":")[1], 16) == port else 0
    return total


def access_lines(server, pattern: str) -> int:
    return len(re.findall(pattern, server.stderr_text))


def test_slow_readers_through_nginx_leave_deployapi_answering_promptly(nginx):
    proxy, server = nginx
    create_bulky_deployments(server)
    with slow_readers(proxy.url):
        # The attack reached deployapi (nginx passed its requests on)...
        assert wait_until(lambda: access_lines(server, r"GET /deployments\?limit=40 200") >= SLOW_READERS)
        # ...and nginx has taken every answer from deployapi: it holds them for the readers.
        assert wait_until(lambda: unread_answer_bytes(server) == 0, timeout=5), \
            f"{unread_answer_bytes(server)} bytes of deployapi's answers not taken by nginx"
        time.sleep(1)
        print(f"attacker requests answered by deployapi: {access_lines(server, 'limit=40 200')}")
        # Every thread is free for everyone else.
        assert_prompt(ordinary_traffic(proxy.url))
        # nginx, not deployapi, holds the readers, and cuts them off after send_timeout (10 s).
        started = time.monotonic()
        assert wait_until(lambda: len(re.findall(r"timed out .* while sending to client",
                                                 proxy.error_log.read_text())) >= SLOW_READERS, timeout=20)
        print(f"slow readers cut off by nginx {time.monotonic() - started:.1f} s after the ordinary requests")


def test_a_header_flood_through_nginx_leaves_deployapi_answering_promptly(nginx):
    proxy, _ = nginx
    with header_flood(proxy.url) as trickle:
        time.sleep(0.5)
        answers = []
        for _ in range(3):
            assert trickle() == FLOOD
            answers += ordinary_traffic(proxy.url)
        assert_prompt(answers)
        # Trickling does not keep a connection: the whole header must arrive within 10 s.
        started = time.monotonic()
        assert wait_until(lambda: trickle() == 0, timeout=20)
        print(f"flood connections all closed {time.monotonic() - started:.1f} s after the ordinary requests")


def post_raw(url: str, headers: str, body_chunks, request_id: str) -> tuple[int, str]:
    """Send a POST with ``body_chunks`` until the answer comes; return its status and Content-Type."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall((f"POST /deployments HTTP/1.1\r\nHost: deploy.example.com\r\n"
                            f"Authorization: {AUTHORIZATION}\r\nContent-Type: application/json\r\n"
                            f"X-Request-ID: {request_id}\r\n{headers}\r\n").encode())
        for chunk in body_chunks:
            if select.select([connection], [], [], 0)[0]:
                break  # answered before the body was sent in full
            try:
                connection.sendall(chunk)
            except OSError:  # nginx may reset the connection it refused
                break
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = connection.recv(4096)
            assert data, "no answer"
            answer += data
    content_type = re.search(rb"^content-type: *([^\r;]*)", answer, flags=re.M | re.I)
    return int(answer.split(b" ", 2)[1]), content_type.group(1).decode() if content_type else ""


def test_large_bodies_are_refused_by_nginx_and_bodies_just_over_64_kib_by_deployapi(nginx):
    proxy, server = nginx
    ten_mib = 10 * 2**20
    block = b"x" * 2**16
    declared = post_raw(proxy.url, f"Content-Length: {ten_mib}\r\n", [block] * (ten_mib // len(block)), "big-declared")
    chunked = post_raw(proxy.url, "Transfer-Encoding: chunked\r\n",
                       [b"%x\r\n%s\r\n" % (len(block), block)] * (ten_mib // len(block)) + [b"0\r\n\r\n"],
                       "big-chunked")
    # text/html: nginx's own page (deployapi's refusals, the app's or its waitress's, are problem+json).
    assert declared == chunked == (413, "text/html")
    # Just over deployapi's own limit (64 KiB) and up to nginx's (72 KiB), deployapi answers itself.
    for size, request_id in ((65_537, "just-over-64k"), (73_728, "at-72k")):
        status, headers, body = http_request("POST", f"{proxy.url}/deployments", b"x" * size,
                                             {"Authorization": AUTHORIZATION, "X-Request-ID": request_id})
        assert (status, headers["Content-Type"]) == (413, "application/problem+json")
        assert json.loads(body)["code"] == "payload_too_large"
    assert wait_until(lambda: access_lines(server, r"POST /deployments 413 .* request_id=just-over-64k"))
    assert post_raw(proxy.url, "Content-Length: 73729\r\n", [b"x" * 73_729], "over-72k") == (413, "text/html")
    status, _, _ = server.request("GET", "/healthz")  # a line after the refused ones, to wait for
    assert status == 200 and wait_until(lambda: "GET /healthz 200" in server.stderr_text)
    for refused in ("big-declared", "big-chunked", "over-72k"):
        assert f"request_id={refused}" not in server.stderr_text


def test_without_nginx_slow_readers_hold_every_waitress_thread(start_server):
    server = start_server("--threads", str(THREADS))
    create_bulky_deployments(server)
    with slow_readers(server.url):
        started = time.monotonic()
        assert wait_until(lambda: timed_request(f"{server.url}/healthz", timeout=1)[0] == 0, timeout=15)
        print(f"waitress stopped answering {time.monotonic() - started:.1f} s into the attack")
        status, seconds = timed_request(f"{server.url}/healthz", timeout=PROMPT)
        assert status == 0, f"waitress answered in {seconds:.3f} s: it absorbs slow readers now; update the docs"
    assert wait_until(lambda: timed_request(f"{server.url}/healthz", timeout=1)[0] == 200)


def test_without_nginx_a_header_flood_stops_waitress_accepting(start_server):
    server = start_server("--threads", str(THREADS))
    with header_flood(server.url) as trickle:
        time.sleep(0.5)
        trickle()
        status, seconds = timed_request(f"{server.url}/healthz", timeout=PROMPT)
        assert status == 0, f"waitress answered in {seconds:.3f} s: it absorbs the flood now; update the docs"
    assert wait_until(lambda: timed_request(f"{server.url}/healthz", timeout=1)[0] == 200)
