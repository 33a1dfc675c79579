"""Import products from a CSV file (see docs/import.md). Safe to re-run: rows are matched by SKU."""

import contextlib
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.importer import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, CatalogImportError, catalog_csv_import
from catalog.management.termination import terminated_like_interrupted
from catalog.spreadsheet import spreadsheet_csv_writer

ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        f"Create or update products from a CSV file with the columns {','.join(REQUIRED_COLUMNS)} "
        f"(optional: {','.join(OPTIONAL_COLUMNS)}). category is a path like 'Home > Furniture > Sofas'; images "
        "holds file paths separated by '|', absolute or relative to --images-dir. Each row is imported on its own: "
        "a bad row is reported with its line number and the others go on. New photos are embedded by the Celery "
        "worker. Exit status: 0 when every row was imported, 1 when some rows failed, 2 when nothing was imported "
        "(unreadable file, missing columns, no such images folder)."
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
        total = file.stat().st_size if file.is_file() else None
        # tqdm writes to the real stderr: Django's OutputWrapper appends a newline to every write.
        bar = tqdm(
            total=total, desc="Importing", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
            disable=verbosity == 0,
        )

        def on_row(bytes_read, summary):
            bar.update(bytes_read - bar.n)
            bar.set_postfix_str(f"{summary.rows} rows, {len(summary.failed)} failed", refresh=False)

        try:
            summary = catalog_csv_import(path=file, images_dir=images_dir, on_row=on_row)
        except CatalogImportError as error:
            bar.leave = False  # an empty bar above the error says nothing
            raise CommandError(f"{error}. Nothing was imported.", returncode=2) from error
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
        if summary.failed:
            raise CommandError(
                f"{len(summary.failed)} of {summary.rows} rows failed (listed above); the other rows were imported. "
                "Fix those rows and run the import again: rows already imported are left as they are.",
                returncode=1,
            )


@contextlib.contextmanager
def _errors_opened(errors: Path | None, *, csv_file: Path):
    """The --errors file, open for writing, or None: checked before the import, which may take hours, not after."""
    if errors is None:
        yield None
        return
    if csv_file.exists() and errors.exists() and errors.samefile(csv_file):
        raise CommandError("--errors names the CSV file being imported; give another file", returncode=2)
    try:
        handle = open(errors, "w", newline="", encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot write --errors {errors}: {error.strerror}. Nothing was imported.",
                           returncode=2) from None
    with handle:
        yield handle
