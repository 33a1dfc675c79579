"""config/settings/base.py's Celery schedule and limits: what beat sends after an outage, and how long the broker
waits before handing a task taken by a dead worker to another."""

import json
from datetime import datetime, timedelta

import pytest
import redis
from django.conf import settings

from config.celery_app import app


def _seconds(schedule) -> float:
    return schedule.total_seconds() if isinstance(schedule, timedelta) else float(schedule)


def test_every_periodic_task_expires_a_little_before_the_next_is_sent():
    """Without an expiry, an hour without a worker left ~60 sweeps and 4 index syncs queued, run back to back."""
    assert settings.CELERY_BEAT_SCHEDULE
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        interval = _seconds(entry["schedule"])
        expires = entry.get("options", {}).get("expires")
        assert expires is not None, name
        assert interval / 2 <= expires < interval, name


def test_the_visibility_timeout_outlasts_every_task_and_its_retries():
    """A task running longer than the visibility timeout is handed out again while it still runs."""
    app.loader.import_default_modules()  # what a worker does at start: autodiscover every app's tasks
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    ours = {name: task for name, task in app.tasks.items() if name.startswith(("search.", "catalog."))}
    assert "search.tasks.category_indexes_sync" in ours
    for name, task in ours.items():
        longest = task.time_limit or settings.CELERY_TASK_TIME_LIMIT
        if getattr(task, "autoretry_for", ()):
            longest += task.retry_backoff_max
        assert visibility > longest, name


@pytest.mark.servers
def test_beat_sends_the_sweep_with_its_expiry():
    """The expiry travels in the message beat sends (a worker drops the message once it is past)."""
    from celery.beat import ScheduleEntry, Scheduler

    queue = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue.delete("celery")
    entry = settings.CELERY_BEAT_SCHEDULE["embedding-sweep"]
    scheduler = Scheduler(app=app, lazy=True)
    try:
        sent_at = datetime.now().astimezone()
        scheduler.apply_async(ScheduleEntry(name="embedding-sweep", app=app, **entry), advance=False)
        [message] = [json.loads(raw) for raw in queue.lrange("celery", 0, -1)]
    finally:
        queue.delete("celery")
    assert message["headers"]["task"] == "search.tasks.embedding_sweep"
    assert message["headers"]["expires"] is not None
    expires = datetime.fromisoformat(message["headers"]["expires"]) - sent_at
    assert abs(expires.total_seconds() - entry["options"]["expires"]) < 5


def test_workers_are_configured_to_stop_their_tasks_when_they_lose_the_broker_and_have_them_sent_again():
    """Left running, a task whose message the broker handed out again ran twice at once, and the second run took
    the first for dead (search/lost_runs.py): a healthy batch was taken apart, a photo failed while embedded."""
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost

