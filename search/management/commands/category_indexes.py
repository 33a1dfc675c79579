"""Build (or drop) every per-category HNSW index the catalog wants now (search/category_indexes.py).

    manage.py category_indexes          what Celery beat does one index at a time, all at once
"""

import sys
import time

from django.core.management.base import BaseCommand
from tqdm import tqdm

from search.category_indexes import category_indexes_sync
from search.selectors import indexed_space_models


class Command(BaseCommand):
    help = "Create the missing per-category HNSW indexes and drop the unwanted ones, all in one run."

    def handle(self, *args, verbosity, **options):
        started = time.perf_counter()

        def building(names):  # one index of a large category takes minutes: say which, and how many are left
            with tqdm(names, desc="Building category indexes", unit="index", file=sys.stderr,
                      disable=verbosity == 0 or None) as bar:
                for name in bar:
                    bar.set_postfix_str(name, refresh=True)
                    yield name

        done = category_indexes_sync(models=indexed_space_models(), limit=None, progress=building)
        for name in done["dropped"]:
            self.stdout.write(f"dropped {name}")
        for name in done["created"]:
            self.stdout.write(f"created {name}")
        self.stdout.write(f"{len(done['created'])} created, {len(done['dropped'])} dropped in "
                          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
