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
