"""Structured logs, one line per event: JSON lines (for machines), or coloured console lines on a terminal.

``SWITCHBOARD_LOG_FORMAT``: ``auto`` (default: console when stdout is a terminal, JSON otherwise),
``json`` or ``console``. Tracebacks never show local variables (they may hold secrets).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from shared.core.redact import mask_event

LOG_FORMATS = ("auto", "json", "console")


def resolve_format(log_format: str, isatty: bool) -> str:
    """``json`` or ``console``: what ``log_format`` means for a stream that is, or is not, a terminal."""
    chosen = log_format.strip().lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if chosen == "auto":
        return "console" if isatty else "json"
    return chosen


def _console_renderer(colors: bool) -> structlog.dev.ConsoleRenderer:
    return structlog.dev.ConsoleRenderer(
        colors=colors,
        exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False, max_frames=20),
    )


def configure_logging(
    service: str, level: str = "INFO", log_format: str = "auto", stream: TextIO | None = None
) -> None:
    """Log events of ``service`` at ``level`` and above to ``stream`` (default stdout)."""
    stream = stream or sys.stdout
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    isatty = stream.isatty()
    console = resolve_format(log_format, isatty) == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso" if not console else "%H:%M:%S", utc=not console),
    ]
    # Libraries log through the standard library: render those the same way.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=_console_renderer(isatty) if console else structlog.processors.JSONRenderer(),
            foreign_pre_chain=[
                *shared[:1],
                structlog.stdlib.add_logger_name,
                *shared[1:],
                *([] if console else [structlog.processors.format_exc_info]),
                mask_event,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    if console:
        structlog.configure(
            processors=[*shared, mask_event, _console_renderer(isatty)],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(stream),
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                mask_event,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.BytesLoggerFactory(stream.buffer),
            cache_logger_on_first_use=True,
        )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
