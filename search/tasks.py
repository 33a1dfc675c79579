"""Celery tasks: thin wrappers that take ids and call services."""

from celery import shared_task
from django.db import InterfaceError, OperationalError


@shared_task(
    autoretry_for=(OperationalError, InterfaceError, ConnectionError, TimeoutError),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=8,
    acks_late=True,
)
def embed_image(image_id: int) -> str:
    from search.services import image_embed

    return image_embed(image_id=image_id)


@shared_task
def requeue_pending_images() -> int:
    from search.services import pending_images_requeue

    return pending_images_requeue()
