"""The one parser of decimal integers written as text: ASCII digits only.

``int()`` is too lenient for text from files, registries, HTTP headers and guests: it takes ``+1``, ``-1``,
``1_0``, and every Unicode decimal digit (``'٣'``), while ``str.isdigit()`` is true for ``'²'`` too, which
``int()`` then refuses with a ValueError. Here a number is one or more of ``0``–``9`` and nothing else.
"""

from __future__ import annotations


def is_ascii_digits(text: str) -> bool:
    """``text`` is one or more ASCII digits ``0``–``9`` (nothing around them)."""
    return bool(text) and text.isascii() and text.isdigit()


def parse_ascii_int(text: str | None, *, max_digits: int | None = None, strip: bool = True) -> int | None:
    """The non-negative integer ``text`` spells in ASCII digits, or None (absent, empty, a sign, an underscore,
    a non-ASCII digit such as ``'²'``, anything else, or more than ``max_digits`` digits).

    ``strip``: surrounding whitespace is allowed (as XML attributes and registry strings carry it); with
    ``strip=False`` the text must be digits only.
    """
    if text is None:
        return None
    digits = text.strip() if strip else text
    if not is_ascii_digits(digits) or (max_digits is not None and len(digits) > max_digits):
        return None
    try:
        return int(digits)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits())
        return None


__all__ = ["is_ascii_digits", "parse_ascii_int"]
