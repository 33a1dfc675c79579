"""Load the demo catalog (real product photos from the Vendure and Saleor packages). Safe to re-run."""

import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.demo import DEFAULT_CACHE_DIR, SOURCES, DemoSourceError, demo_products_collect, demo_products_load


class Command(BaseCommand):
    help = (
        "Fetch the demo packages (cached under the state directory) and create or update their products, "
        "categories and photos. Re-running adds nothing that is already there. See docs/demo-data.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--source", action="append", choices=sorted(SOURCES), dest="sources",
            help="load only this source (repeatable; default: all)",
        )
        parser.add_argument("--no-fetch", action="store_true", help="use the cache only; fail if it is empty")
        parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)

    def handle(self, *args, sources, no_fetch, cache_dir, verbosity, **options):
        started = time.monotonic()
        try:
            products = demo_products_collect(sources=sources or list(SOURCES), cache_dir=cache_dir, fetch=not no_fetch)
        except DemoSourceError as error:
            raise CommandError(str(error)) from error

        # tqdm writes to the real stderr: Django's OutputWrapper appends a newline to every write.
        bar = tqdm(products, desc="Demo products", unit="product", file=sys.stderr, disable=verbosity == 0)
        summary = demo_products_load(products=bar)
        bar.close()

        self.stdout.write(
            f"Demo catalog: {len(products)} products ({summary.created} created, {summary.updated} updated, "
            f"{summary.unchanged} unchanged), {summary.images_added} images added, "
            f"{len(summary.categories)} leaf categories, in {time.monotonic() - started:.1f} s."
        )
        if summary.images_added:
            self.stdout.write("New images are embedded by the Celery worker; search finds them once it has run.")
