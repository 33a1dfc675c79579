"""Celery tasks: thin wrappers that take ids and call services (which send them by name, so this module imports
them and never the reverse)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from search import services


@shared_task(
    autoretry_for=(OperationalError, InterfaceError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    acks_late=True,
)
def embed_images(image_ids: list[int], force: bool = False) -> dict[str, int]:
    return services.images_embed(image_ids=image_ids, force=force)


@shared_task
def embedding_sweep() -> dict:
    return services.embedding_sweep()
