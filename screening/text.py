"""Text that is safe to show on a terminal and to store as UTF-8.

File names on Linux are bytes (anything but ``/`` and NUL); Python decodes the undecodable
ones to lone surrogates, which SQLite and JSON cannot encode, and a name or a CIF value may
carry ESC and other control characters that a terminal would obey. :func:`printable` turns
both into visible escapes.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 and C1 controls and DEL, except nothing: tabs and newlines are escaped too (one line)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def printable(text: object) -> str:
    """Return ``str(text)`` with control characters and lone surrogates as escapes.

    Parameters
    ----------
    text
        Anything; converted with ``str``.

    Returns
    -------
    str
        Encodable as UTF-8 and free of terminal control sequences. A surrogate from an
        undecodable byte (``os.fsdecode``) shows as that byte (backslash, x, two hex
        digits); other lone surrogates as backslash, u, four hex digits.
    """
    value = str(text)
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        value = "".join(
            f"\\x{ord(ch) - 0xDC00:02x}"
            if "\udc80" <= ch <= "\udcff"
            else (f"\\u{ord(ch):04x}" if "\ud800" <= ch <= "\udfff" else ch)
            for ch in value
        )
    return _CONTROL.sub(_escape, value)
