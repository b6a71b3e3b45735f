"""Log lines: one JSON object each with ROOMCAST_LOG_JSON=1, plain text otherwise.

Django calls `configure` with the LOGGING setting (LOGGING_CONFIG names it). Every handler
gets the chosen format, so values a log call passes in `extra=` (a socket's room, user,
duration and close code on `rooms.sockets`) become fields of its JSON object; every logger,
Django's own included, writes through the root's one handler, once.
"""

from __future__ import annotations

import copy
import logging.config
from typing import Any

from django.conf import settings

FORMATTERS: dict[str, dict[str, Any]] = {
    "plain": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": ["levelname", "name", "message"],
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": True,
    },
}


def with_format(config: dict[str, Any], json_lines: bool) -> dict[str, Any]:
    """The logging configuration with one handler, at the root, in the chosen format.

    Loggers keep their levels but pass their records up to the root's handler (the first
    one LOGGING defines) instead of writing them themselves: every line is written once and
    in one format, whatever library logs it, and pytest's caplog (at the root) sees them all.
    """
    config = copy.deepcopy(config)
    config.setdefault("formatters", {}).update(FORMATTERS)
    for handler in config.get("handlers", {}).values():
        handler.setdefault("formatter", "json" if json_lines else "plain")
    handlers = list(config.get("handlers", {}))[:1]
    loggers = config.setdefault("loggers", {})
    # Django's own (request errors among them); Django's default gives it handlers of its own.
    loggers.setdefault("django", {"level": "INFO"})
    for logger in loggers.values():
        if logger.get("propagate", True):
            logger["handlers"] = []
    config.setdefault("root", {"level": "WARNING"})["handlers"] = handlers
    return config


def configure(config: dict[str, Any]) -> None:
    """Apply the LOGGING setting in the format ROOMCAST_LOG_JSON chose."""
    logging.config.dictConfig(with_format(config, settings.ROOMCAST_LOG_JSON))
