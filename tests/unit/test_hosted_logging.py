"""Logging under another WSGI server: deployapi's records in its own format, unless the host decided otherwise."""

from __future__ import annotations

import contextlib
import json
import logging
import re

import pytest

from deployapi import logs

TEXT_ACCESS_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO deployapi\.access: GET /healthz 200 1\.5ms request_id=r-1")


@contextlib.contextmanager
def bare_logging():
    """Logging as a host that configured none leaves it (no handler anywhere), put back afterwards.

    A context manager, not a fixture: pytest adds its own handlers to the root
    logger for the test's call, after the fixtures are set up.
    """
    loggers = [logging.getLogger(name) for name in ("", "deployapi", "deployapi.access")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers[:] = []
    logging.getLogger("deployapi").setLevel(logging.NOTSET)
    logging.getLogger("deployapi").propagate = True
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def access_line() -> None:
    logs.log_access("GET", "/healthz", 200, 1.5, "r-1")


def test_with_no_logging_configured_the_access_log_goes_to_stderr_in_the_text_format(capsys):
    with bare_logging():
        assert logs.configure_hosted()
        access_line()
        assert TEXT_ACCESS_LINE.fullmatch(capsys.readouterr().err.strip())


def test_a_root_handler_the_host_adds_afterwards_does_not_write_each_line_twice(capsys):
    with bare_logging():
        # waitress-serve calls logging.basicConfig() after it has loaded the app.
        logs.configure_hosted()
        logging.basicConfig()
        logging.getLogger().setLevel(logging.INFO)
        access_line()
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_json_format_carries_the_access_fields(capsys):
    with bare_logging():
        logs.configure_hosted("info", "json")
        access_line()
        entry = json.loads(capsys.readouterr().err)
        assert entry["logger"] == "deployapi.access" and entry["status"] == 200 and entry["request_id"] == "r-1"


def test_the_level_drops_what_is_below_it(capsys):
    with bare_logging():
        logs.configure_hosted("warning")
        access_line()
        logging.getLogger("deployapi").warning("health check failed: x")
        assert capsys.readouterr().err.strip().endswith("WARNING deployapi: health check failed: x")


def test_a_host_that_configured_the_root_logger_keeps_deployapis_records_unless_asked():
    with bare_logging():
        host = logging.Handler()
        logging.getLogger().addHandler(host)
        assert not logs.configure_hosted()
        own = logging.getLogger("deployapi")
        assert own.handlers == [] and own.propagate and own.level == logging.NOTSET
        # A DEPLOYAPI_LOG_* variable set is asking deployapi for its own format all the same.
        assert logs.configure_hosted(asked=True)
        assert len(own.handlers) == 1 and not own.propagate


@pytest.mark.parametrize("name", ["deployapi", "deployapi.access"])
def test_a_host_that_configured_deployapis_loggers_is_left_alone_even_when_asked(name):
    with bare_logging():
        host = logging.Handler()
        logging.getLogger(name).addHandler(host)
        assert not logs.configure_hosted(asked=True)
        assert logging.getLogger(name).handlers == [host] and logging.getLogger("deployapi").propagate


def test_configuring_again_replaces_the_handler_rather_than_adding_one(capsys):
    with bare_logging():
        logs.configure_hosted("info", "text")
        logging.basicConfig()  # a root handler meanwhile does not stop deployapi from replacing its own
        assert logs.configure_hosted("info", "json")
        access_line()
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["path"] == "/healthz"
