"""manage.py calibrate: recompute the photo search cut-off from the catalog's vectors now (the sweep does it by itself
once the catalog has changed enough)."""

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
