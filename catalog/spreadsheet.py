"""CSV files written for people to open in a spreadsheet (the import's --errors file).

A cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) is a formula to
Excel, LibreOffice and Google Sheets, which run it on opening: a SKU like ``=HYPERLINK(...)`` in a catalog file
would come back as a live link or worse. Such cells are written with a leading ``'``, which spreadsheets take
as "text" and do not show; the value stays readable.
"""

from __future__ import annotations

import csv
from typing import TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _SafeWriter:
    def __init__(self, handle: TextIO):
        self._writer = csv.writer(handle)

    def writerow(self, row) -> None:
        self._writer.writerow([spreadsheet_cell(value) for value in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)


def spreadsheet_csv_writer(handle: TextIO) -> _SafeWriter:
    """A ``csv.writer`` whose every cell is made safe to open with ``spreadsheet_cell``."""
    return _SafeWriter(handle)
