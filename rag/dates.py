"""Dates as the index stores and compares them: `YYYY-MM-DD`.

Date filters compare these strings, which orders them correctly only when every date is a
real calendar date in exactly this form; so dates are checked where they enter (a `.jsonl`
record, a CLI option) instead of being compared as whatever text arrived.
"""

from __future__ import annotations

import datetime as dt
import re

# A date, optionally followed by a time (`T` or a space) and a UTC offset: what exports write.
_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?")
EXPECTED = "expected a date as YYYY-MM-DD (a time may follow: YYYY-MM-DDTHH:MM…)"


def calendar_date(value: str) -> str:
    """`value` if it is exactly a real YYYY-MM-DD date (what request bodies must send)."""
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError("expected a date as YYYY-MM-DD")


def iso_date(value: str) -> str:
    """`value` as YYYY-MM-DD; a timestamp keeps the date as written (no time-zone
    conversion). ValueError for anything else, e.g. "2023-02-30" or "yesterday"."""
    text = value.strip()
    if not _SHAPE.fullmatch(text):
        raise ValueError(f"{EXPECTED}, got {value!r}")
    try:
        # Both calls reject impossible values (February 30, hour 25) that the shape lets through.
        parsed = dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text).date()
    except ValueError:
        raise ValueError(f"{value!r} is not a real date") from None
    return parsed.isoformat()
