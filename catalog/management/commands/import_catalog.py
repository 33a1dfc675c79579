"""Import products from a CSV file (see docs/import.md). Safe to re-run: rows are matched by SKU."""

import os
import sys
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError
from tqdm import tqdm

from catalog.importer import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, CatalogImportError, catalog_csv_import
from catalog.management.termination import terminated_like_interrupted
from catalog.services import LoadSummary
from catalog.spreadsheet import spreadsheet_csv_writer

ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        f"Create or update products from a CSV file with the columns {','.join(REQUIRED_COLUMNS)} "
        f"(optional: {','.join(OPTIONAL_COLUMNS)}). category is a path like 'Home > Furniture > Sofas'; images "
        "holds file paths separated by '|', absolute or relative to --images-dir. Each row is imported on its own: "
        "a bad row is reported with its line number and the others go on. New photos are embedded by the Celery "
        "worker. Exit status: 0 when every row was imported, 1 when some rows failed, 2 when nothing was imported "
        "(unreadable file, missing or misspelt columns, no such images folder), 3 when the import was stopped "
        "(interrupted, the database lost) before the end of the file."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the CSV file (UTF-8, comma-separated, header on line 1)")
        parser.add_argument(
            "--images-dir", type=Path, help="folder for relative image paths (default: the CSV file's folder)"
        )
        parser.add_argument("--errors", type=Path, metavar="FILE", help="write every failed row to FILE (CSV)")

    def handle(self, *args, file, images_dir, errors, verbosity, **options):
        _errors_writable(errors, csv_file=file)  # before the import, which may take hours, not after
        with terminated_like_interrupted():
            self._import(file, images_dir, errors, verbosity)

    def _import(self, file, images_dir, errors, verbosity):
        started = time.monotonic()
        try:
            total = file.stat().st_size
        except OSError:  # the import says why it cannot read the file
            total = None
        # tqdm writes to the real stderr: Django's OutputWrapper appends a newline to every write.
        bar = tqdm(
            total=total, desc="Importing", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
            disable=verbosity == 0,
        )
        seen = LoadSummary()  # the import's summary as its last row left it, should it be stopped

        def on_row(bytes_read, summary):
            nonlocal seen
            if summary.ignored_columns and seen.rows == 0 and not bar.disable:  # at once, not only after hours
                bar.write(f"Ignored column(s): {', '.join(summary.ignored_columns)}", file=sys.stderr)
            seen = summary
            bar.update(bytes_read - bar.n)
            bar.set_postfix_str(f"{summary.rows} rows, {len(summary.failed)} failed", refresh=False)

        stopped = None
        try:
            summary = catalog_csv_import(path=file, images_dir=images_dir, on_row=on_row)
        except CatalogImportError as error:
            bar.leave = False  # an empty bar above the error says nothing
            raise CommandError(f"{error}. Nothing was imported.", returncode=2) from error
        except (KeyboardInterrupt, OperationalError, InterfaceError) as error:  # Ctrl-C, SIGTERM, the database lost
            summary, stopped = seen, error
        finally:
            bar.close()

        if summary.ignored_columns:
            self.stderr.write(f"Ignored column(s): {', '.join(summary.ignored_columns)}")
        for failure in summary.failed[:ERRORS_SHOWN]:
            self.stderr.write(str(failure))
        if len(summary.failed) > ERRORS_SHOWN:
            more = len(summary.failed) - ERRORS_SHOWN
            hint = f"; all are in {errors}" if errors else "; --errors FILE lists them all"
            self.stderr.write(f"... and {more} more failed row(s){hint}")
        if errors is not None and (stopped is None or summary.rows):  # a run that read no row keeps the last list
            _errors_write(errors, summary.failed)

        self.stdout.write(
            f"Imported {file}: {summary.rows} rows: {summary.outcomes}, {len(summary.failed)} failed; "
            f"{summary.images_added} images added, in {time.monotonic() - started:.1f} s."
        )
        if summary.embedding_note:
            self.stdout.write(summary.embedding_note)
        if stopped is not None:
            why = "interrupted" if isinstance(stopped, KeyboardInterrupt) else f"a database error: {stopped}"
            # Counted: the rows before the batch being written, whose transaction may or may not have committed.
            counted = (f"after line {summary.last_line}, with {summary.rows - len(summary.failed)} row(s) imported "
                       f"and {len(summary.failed)} failed up to it" if summary.rows else "before any row was counted")
            raise CommandError(
                f"Stopped before the end of the file ({why}) {counted}; the rows being written then may have been "
                "imported too. Run the same file again to finish: rows already imported are left as they are.",
                returncode=3,
            )
        if summary.unread_from:
            raise CommandError(
                f"Stopped before the end of the file: it cannot be read past line {summary.unread_from} (listed "
                f"above); the rows before it were imported, {len(summary.failed) - 1} of them failing. Mend the file "
                "there and run it again: rows already imported are left as they are.",
                returncode=3,
            )
        if summary.failed:
            raise CommandError(
                f"{len(summary.failed)} of {summary.rows} rows failed (listed above); the other rows were imported. "
                "Fix those rows and run the import again: rows already imported are left as they are.",
                returncode=1,
            )


def _errors_writable(errors: Path | None, *, csv_file: Path) -> None:
    """Refuse an --errors file that could not be written, before the import runs."""
    if errors is None:
        return
    try:
        if errors.is_dir():
            raise CommandError(f"--errors {errors} is a folder; name a file. Nothing was imported.", returncode=2)
        if csv_file.exists() and errors.exists() and errors.samefile(csv_file):
            raise CommandError("--errors names the CSV file being imported; give another file", returncode=2)
        writable = os.access(errors.parent, os.W_OK) or (errors.exists() and os.access(errors, os.W_OK))
    except OSError as error:
        writable, why = False, error.strerror
    else:
        why = "not writable" if errors.parent.is_dir() else "no such folder"
    if not writable:
        raise CommandError(f"cannot write --errors {errors}: {why}. Nothing was imported.", returncode=2)


def _errors_write(errors: Path, failures: list) -> None:
    """Every failed row into --errors as CSV, with a byte-order mark (a spreadsheet on Windows reads UTF-8 without one
    as its own code page). Written beside it and put in its place, so that an interruption leaves the last list
    whole; straight into it where it is no file (``/dev/stdout``, a pipe) or its folder takes no new one."""
    def write(handle) -> None:
        writer = spreadsheet_csv_writer(handle)  # cells like =HYPERLINK(...) stay text
        writer.writerow(["line", "sku", "error"])
        writer.writerows([failure.line, failure.sku, failure.message] for failure in failures)

    try:
        in_place = errors.exists() and not errors.is_file()  # a device or a pipe: replaced, it would be a file
        handle = None if in_place else tempfile.NamedTemporaryFile(
            "w", dir=errors.parent, prefix=f".{errors.name}.", suffix=".tmp", newline="", encoding="utf-8-sig",
            delete=False)
    except OSError:
        handle = None
    if handle is None:
        with open(errors, "w", newline="", encoding="utf-8-sig") as direct:
            write(direct)
        return
    try:
        with handle:
            write(handle)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(handle.fileno(), 0o666 & ~umask)  # as a file the command opened itself, not a temp file's 0600
        os.replace(handle.name, errors)
    except BaseException as error:
        os.unlink(handle.name)
        if isinstance(error, OSError):
            raise CommandError(f"the import ran (summary above), but --errors {errors} could not be written: "
                               f"{error.strerror}", returncode=1) from None
        raise
