"""structlog to stderr: readable on a terminal, JSON lines otherwise (or with --log-format json)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(log_format: str = "auto", debug: bool = False) -> None:
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()) if log_format == "console"
                else structlog.processors.JSONRenderer(sort_keys=False))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
