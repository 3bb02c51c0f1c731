"""Log formats: the text lines and the JSON fields of access records."""

from __future__ import annotations

import json
import logging

from deployapi import logs

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record(created: float, name: str = "deployapi.access", args: tuple = ("GET", "/x", 200, 1.23456, "rid")):
    entry = logging.LogRecord(name, logging.INFO, __file__, 1, "%s %s %d %.1fms request_id=%s", args, None)
    entry.created, entry.msecs = created, (created % 1) * 1000
    return entry


def test_the_text_format_is_the_standard_one_across_second_boundaries():
    fast, standard = logs.TextFormatter(FORMAT), logging.Formatter(FORMAT)
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5, 1_700_000_000.25):
        assert fast.format(record(created)) == standard.format(record(created))


def test_json_access_records_carry_their_fields_and_other_records_do_not():
    formatter = logs.JsonFormatter()
    access = json.loads(formatter.format(record(1_700_000_000.5)))
    assert access["message"] == "GET /x 200 1.2ms request_id=rid"
    assert {k: access[k] for k in logs.ACCESS_FIELDS} == {
        "method": "GET", "path": "/x", "status": 200, "duration_ms": 1.235, "request_id": "rid"}
    other = json.loads(formatter.format(record(1_700_000_000.5, name="deployapi", args=("a", "b", 1, 2.0, "c"))))
    assert not set(logs.ACCESS_FIELDS) & set(other)


FORGED = "/x\n2026-11-26 10:00:00,000 INFO deployapi.access: POST /deployments 201 1.0ms request_id=ok\x1b[2K\u202e"


def test_a_text_line_escapes_newlines_terminal_escapes_and_bidi_controls_in_any_field():
    line = logs.TextFormatter(FORMAT).format(record(1_700_000_000.5, args=("GET\r", FORGED, 404, 1.0, "rid")))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert "GET\\r /x\\n2026-11-26" in line and "request_id=ok\\x1b[2K\\u202e 404" in line


def test_a_traceback_keeps_its_lines_but_none_of_them_can_pass_for_a_record():
    try:
        raise ValueError("bad input\n2026-11-26 10:00:00,000 INFO deployapi.access: forged\x1b[2K")
    except ValueError as error:
        entry = logging.LogRecord("deployapi", logging.ERROR, __file__, 1, "failed: %s", ("it",), None)
        entry.exc_info = (type(error), error, error.__traceback__)
    lines = logs.TextFormatter(FORMAT).format(entry).split("\n")
    assert lines[0].endswith("ERROR deployapi: failed: it")
    assert len(lines) > 2 and all(line.startswith("    ") for line in lines[1:])
    assert not any("\x1b" in line for line in lines)


def test_json_lines_escape_c1_controls_and_bidi_controls_too():
    text = logs.JsonFormatter().format(record(1_700_000_000.5, args=("GET", "/x\x9b2K\u2028\u202e", 404, 1.0, "r")))
    assert not any(ch in text for ch in "\x9b\u2028\u202e\n")
    assert json.loads(text)["path"] == "/x\x9b2K\u2028\u202e"


def test_with_a_pid_each_text_line_names_its_process_after_the_logger_as_syslog_does():
    formatter = logs.stderr_handler("text", pid=4242).formatter
    assert " INFO deployapi.access[4242]: GET /x 200 1.2ms request_id=rid" in formatter.format(record(1_700_000_000.5))
    assert " INFO deployapi.access: GET" in logs.stderr_handler("text").formatter.format(record(1_700_000_000.5))


def test_with_a_pid_each_json_line_carries_it_and_without_one_none_does():
    with_pid = json.loads(logs.stderr_handler("json", pid=4242).formatter.format(record(1_700_000_000.5)))
    assert with_pid["pid"] == 4242 and with_pid["request_id"] == "rid"
    assert "pid" not in json.loads(logs.JsonFormatter().format(record(1_700_000_000.5)))
