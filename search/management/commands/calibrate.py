"""manage.py calibrate: recompute the photo search cut-off from the catalog's vectors now (the sweep does it by itself
once the catalog has changed enough)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from search.sweep import embedding_space_calibrate, embedding_space_sync


class Command(BaseCommand):
    help = "Recompute the \"nothing similar enough\" cut-off of the searched embedding space from its vectors."

    def handle(self, *args, **options):
        space = embedding_space_calibrate(space=embedding_space_sync(), force=True)
        if space.min_score is None:
            self.stdout.write(f"{space.model}: too few products to calibrate; the default cut-off applies")
        else:
            self.stdout.write(f"{space.model}: cut-off {space.min_score:.3f} from {space.calibrated_vectors} vectors")
        if settings.SEARCH_MIN_SCORE is not None:
            self.stdout.write(self.style.WARNING(
                f"SEARCH_MIN_SCORE pins the cut-off search uses at {settings.SEARCH_MIN_SCORE:.3f}; the calibrated "
                "one applies once it is unset"))
