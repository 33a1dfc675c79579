"""Import products from a CSV file (see docs/import.md). Safe to re-run: rows are matched by SKU."""

import contextlib
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
        with _errors_opened(errors, csv_file=file) as errors_file, terminated_like_interrupted():
            self._import(file, images_dir, errors, errors_file, verbosity)

    def _import(self, file, images_dir, errors, errors_file, verbosity):
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
        if errors_file is not None:
            writer = spreadsheet_csv_writer(errors_file)  # cells like =HYPERLINK(...) stay text
            writer.writerow(["line", "sku", "error"])
            writer.writerows([failure.line, failure.sku, failure.message] for failure in summary.failed)
            errors_file.flush()

        self.stdout.write(
            f"Imported {file}: {summary.rows} rows: {summary.outcomes}, {len(summary.failed)} failed; "
            f"{summary.images_added} images added, in {time.monotonic() - started:.1f} s."
        )
        if summary.embedding_note:
            self.stdout.write(summary.embedding_note)
        if stopped is not None:
            why = "interrupted" if isinstance(stopped, KeyboardInterrupt) else f"the database was lost ({stopped})"
            where = (f"the rows up to line {summary.last_line} were imported" if summary.rows
                     else "no row was imported")
            raise CommandError(
                f"Stopped before the end of the file: {why}; {where}. Run the import again to go on: rows already "
                "imported are left as they are.", returncode=3,
            )
        if summary.failed:
            raise CommandError(
                f"{len(summary.failed)} of {summary.rows} rows failed (listed above); the other rows were imported. "
                "Fix those rows and run the import again: rows already imported are left as they are.",
                returncode=1,
            )


@contextlib.contextmanager
def _errors_opened(errors: Path | None, *, csv_file: Path):
    """The --errors file, or None: checked before the import, which may take hours, not after. Written beside it and
    put in its place once the import has run (to its end or stopped): an import that reads nothing leaves the
    last run's list as it was."""
    if errors is None:
        yield None
        return
    try:
        if csv_file.exists() and errors.exists() and errors.samefile(csv_file):
            raise CommandError("--errors names the CSV file being imported; give another file", returncode=2)
        # With a byte-order mark: a spreadsheet on Windows reads UTF-8 without one as its own code page.
        handle = tempfile.NamedTemporaryFile("w", dir=errors.parent, prefix=f".{errors.name}.", suffix=".tmp",
                                             newline="", encoding="utf-8-sig", delete=False)
    except OSError as error:
        raise CommandError(f"cannot write --errors {errors}: {error.strerror}. Nothing was imported.",
                           returncode=2) from None
    written = False
    try:
        with handle:
            yield handle
        written = True
    except CommandError as error:
        written = error.returncode != 2
        raise
    finally:
        if written:
            os.replace(handle.name, errors)
        else:
            os.unlink(handle.name)
