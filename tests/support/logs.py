"""Capturing what the culler's loggers write, as the command line writes it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from trio_culler._logging import JsonFormatter


@contextmanager
def json_lines() -> Iterator[io.StringIO]:
    """What the culler's loggers write at INFO and above, through the command line's own JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("trio_culler")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
