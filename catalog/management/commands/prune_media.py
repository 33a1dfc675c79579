"""Delete photo files that no product photo names (see catalog/orphans.py)."""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from catalog.orphans import photo_files_in, photo_folders, prune_refusal
from catalog.services import stored_files_delete


MAX_AGE_HOURS = 24 * 365 * 100  # a century: more finds nothing older and overflows the date arithmetic


class Command(BaseCommand):
    help = (
        "Delete photo files that no product photo names: what an import, a demo load or an upload killed mid-write "
        "(SIGKILL, a power cut) left on disk. Files younger than --older-than-hours are left alone: they may belong "
        "to a write still in progress. It deletes nothing, unless --force, when the database has no photos or "
        "when more than a fifth of the files would go: the database is then not the one the files belong to."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than-hours", type=float, default=24.0, help="only files older than this (24)")
        parser.add_argument("--dry-run", action="store_true", help="list the files, delete nothing")
        parser.add_argument("--force", action="store_true",
                            help="delete even when the database has no photos or most files would go")

    def handle(self, *args, older_than_hours, dry_run, force, verbosity, **options):
        if not 1 <= older_than_hours <= MAX_AGE_HOURS:  # NaN fails both
            raise CommandError(f"--older-than-hours must be from 1 to {MAX_AGE_HOURS}: a younger file may belong to "
                               "a write in progress")
        stored_before = timezone.now() - timezone.timedelta(hours=older_than_hours)
        stored, orphans = 0, []
        for folder in tqdm(photo_folders(), unit="folder", desc="prune_media", file=sys.stderr, disable=verbosity == 0):
            in_folder, orphaned = photo_files_in(folder=folder, stored_before=stored_before)
            stored += in_folder
            orphans += orphaned
        if verbosity > 1 or dry_run:
            for name in orphans:
                self.stdout.write(name)
        # Decided on the whole tree before deleting anything: every photo was lost this way to an empty database.
        refusal = "" if force else prune_refusal(stored=stored, orphans=len(orphans))
        if refusal and not dry_run:
            raise CommandError(f"nothing deleted: {refusal} `--dry-run` lists the files; `--force` deletes them.")
        if refusal:
            self.stderr.write(f"without --dry-run this would refuse: {refusal}")
        if not dry_run:
            stored_files_delete(orphans)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{len(orphans)} photo file(s) that no photo names, older than {older_than_hours:g} h: "
                          f"{verb}.")
