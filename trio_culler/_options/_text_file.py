"""Reading a file the operator wrote (the config file, the rules file) as UTF-8 text, with one wording for what
goes wrong: the file is named first, as in every other error about its content."""

from __future__ import annotations

import codecs

from .._errors import ConfigError

__all__ = ["read_text_file"]


def read_text_file(path: str, label: str) -> str:
    """The text of the file at ``path``, or :class:`ConfigError` starting with ``label`` (how the file's other
    errors name it). A leading byte-order mark is dropped: editors on Windows write one, and neither Python's
    ``compile`` on a string nor ``tomllib`` accepts it. A byte that is not UTF-8 is named by its offset in the file.
    """
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ConfigError(f"{label}: cannot read it: {error.strerror or error}") from None
    skipped = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skipped:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label}: not UTF-8 text (byte {skipped + error.start}: {error.reason})") from None
