"""Recompute product images' vectors with the configured model, in batches, with a progress bar.

    manage.py reindex                       every image (search keeps answering from the stored vectors)
    manage.py reindex --category sofas      one category and its descendants
    manage.py reindex --only pending,failed what is missing; also how an interrupted run resumes
    manage.py reindex --background          hand the work to the Celery workers and watch them (giving up when
                                            none finishes an image for --timeout seconds, 600 by default); the
                                            queue is topped up as they go, as the sweep does, so that the beat
                                            tasks are not held up behind the whole selection

It exits with status 1 when any selected image failed (the admin lists why; `--only failed` redoes them), or when
the workers it watches stop making progress. Each batch commits on its own, and a selected image stays ``pending``
until its vector is stored, so after a crash ``reindex --only pending`` (same --category) carries on where the run
stopped. The run marks its selection as queued, so the beat sweep leaves it alone; ten minutes after a crash the sweep
sends what is left to the workers.
"""

import math
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import EmbeddingStatus
from catalog.selectors import UnknownCategory, category_by_slug, category_descendant_ids
from search.embeddings import active_embedder
from search.selectors import image_ids_selected, images_count
from search.services import (
    PENDING_STALE_SECONDS,
    image_embedding_top_up,
    images_embed,
    images_recompute_claim,
    images_recompute_claim_renew,
)
from search.sweep import embedding_space_calibrate, embedding_space_sync

# A run here renews its claim on the rest of its selection this often, well before the sweep counts it as lost.
CLAIM_RENEW_SECONDS = PENDING_STALE_SECONDS // 2
# --background gives up when no image has finished for this long: the workers are down or stuck. A task waits at most
# behind the sweep's queue (about 2.5 minutes of work on two cores) and a model load.
WATCH_TIMEOUT_SECONDS = 600.0
STATUSES = set(EmbeddingStatus.values)
TOP_UP_SECONDS = 5  # how often --background fills the queue up again (and asks the broker how full it is)


class Command(BaseCommand):
    help = "Re-embed product images (all, one category, or only pending/failed ones), resumably."

    def add_arguments(self, parser):
        parser.add_argument("--category", help="slug of a category; its descendants are included")
        parser.add_argument(
            "--only", help="comma-separated statuses to redo: pending, failed, ready (default: all images)"
        )
        parser.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
        parser.add_argument("--background", action="store_true", help="queue Celery tasks instead of working here")
        parser.add_argument(
            "--timeout", type=float, default=WATCH_TIMEOUT_SECONDS,
            help=f"with --background: give up (exit status 1) when no image has finished for this many seconds "
                 f"(default {WATCH_TIMEOUT_SECONDS:g})",
        )

    def handle(self, *args, category=None, only=None, batch_size=64, background=False,
               timeout=WATCH_TIMEOUT_SECONDS, **options):
        self.quiet = options.get("verbosity", 1) == 0 or None  # None: a bar only on a terminal
        category_ids = statuses = None
        if category:
            try:
                category_ids = category_descendant_ids(category=category_by_slug(slug=category))
            except UnknownCategory as error:
                raise CommandError(str(error)) from None
        if only is not None:
            statuses = {status.strip() for status in only.split(",") if status.strip()}
            if not statuses:
                raise CommandError(f"--only needs a status: {', '.join(sorted(STATUSES))}")
            if unknown := statuses - STATUSES:
                raise CommandError(f"unknown status {', '.join(sorted(unknown))}; use {', '.join(sorted(STATUSES))}")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if not 0 < timeout < math.inf:  # NaN fails it too: a run that never gives up
            raise CommandError("--timeout must be a number of seconds more than 0")

        embedding_space_sync()
        selected = image_ids_selected(category_ids=category_ids, statuses=statuses)
        images_recompute_claim(image_ids=selected)  # the whole selection first: the to-do list of a resumed run
        embedder = active_embedder()
        self.stdout.write(f"Re-embedding {len(selected)} image(s) with {embedder.id}")
        if background:
            self._watch(selected, timeout=timeout)
        else:
            self._embed_here(selected, embedder, batch_size)
        space = embedding_space_sync()
        try:  # a switch made here is calibrated here, not a sweep later: search meanwhile used the default cut-off
            space = embedding_space_calibrate(space=space)
        except Exception as error:  # noqa: BLE001 - the vectors are stored either way; the sweep calibrates later
            self.stderr.write(self.style.WARNING(f"Could not calibrate {space.model} ({error}); the sweep will."))
        failed = images_count(image_ids=selected, status=EmbeddingStatus.FAILED)
        style = self.style.WARNING if failed else self.style.SUCCESS
        self.stdout.write(style(f"Done. {failed} failed. Search uses {space.model}."))
        if failed:
            # A script or an operator's `&&` must not take a run that left photos out of search for a success.
            retry = " ".join(["manage.py reindex --only failed", *([f"--category {category}"] if category else [])])
            raise CommandError(f"{failed} of {len(selected)} image(s) failed; the admin lists why (the photos' "
                               f"embedding error). Once the cause is fixed, retry them: {retry}", returncode=1)

    def _embed_here(self, selected, embedder, batch_size):
        claimed = time.monotonic()
        with tqdm(total=len(selected), unit="img", desc="reindex", disable=self.quiet) as bar:
            for start in range(0, len(selected), batch_size):
                if time.monotonic() - claimed > CLAIM_RENEW_SECONDS:
                    images_recompute_claim_renew(image_ids=selected[start:])
                    claimed = time.monotonic()
                batch = selected[start : start + batch_size]
                outcome = images_embed(image_ids=batch, embedder=embedder, force=True)
                bar.update(len(batch))
                bar.set_postfix(failed=outcome["failed"], refresh=False)

    def _watch(self, selected, *, timeout):
        unsent, left, progressed = list(selected), len(selected), time.monotonic()
        claimed = top_up_at = progressed
        broker_down_said = False
        with tqdm(total=len(selected), unit="img", desc="workers", disable=self.quiet) as bar:
            while True:
                if unsent and time.monotonic() >= top_up_at:
                    if time.monotonic() - claimed > CLAIM_RENEW_SECONDS:  # the sweep must not send them meanwhile
                        images_recompute_claim_renew(image_ids=unsent)
                        claimed = time.monotonic()
                    sent = image_embedding_top_up(image_ids=unsent, force=True)
                    if sent is None and not broker_down_said:
                        self.stderr.write(f"The task queue does not answer: {len(unsent)} image(s) wait to be sent; "
                                          "they are sent once it does (or by the sweep, if this run stops).")
                    broker_down_said = sent is None
                    unsent, top_up_at = unsent[sent or 0:], time.monotonic() + TOP_UP_SECONDS
                left, before = images_count(image_ids=selected, status=EmbeddingStatus.PENDING), left
                bar.update(len(selected) - left - bar.n)
                if left == 0:
                    return
                if left < before:
                    progressed = time.monotonic()
                elif time.monotonic() - progressed >= timeout:
                    # Without a bound this watched a dead worker for ever. The work is not lost: the images stay
                    # pending, and the sweep sends them again once workers answer.
                    raise CommandError(
                        f"no image finished in {timeout:g} s: are the Celery workers running? {left} of "
                        f"{len(selected)} image(s) are still pending; the sweep sends them to the workers again "
                        f"once they answer, or `manage.py reindex --only pending` embeds them here.", returncode=1)
                time.sleep(1)
