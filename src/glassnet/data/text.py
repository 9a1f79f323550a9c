"""Names from files (paths, class names) made safe to print on a terminal."""

from __future__ import annotations

import os


def printable(text: str | os.PathLike) -> str:
    """``text`` with each non-printable character escaped as ``repr`` writes it.

    Control characters (an ANSI escape ``\\x1b``, a newline), invisible format characters
    (``\\u202e``) and undecodable bytes of a file name (``\\udcff``) become their escapes, so a
    hostile name cannot move the cursor, recolour or rewrite what the terminal shows.

    >>> printable("a\\x1b[31mb\\n.png")
    'a\\\\x1b[31mb\\\\n.png'
    """
    text = os.fspath(text) if isinstance(text, os.PathLike) else text
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
