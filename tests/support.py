import time


def wait_for(predicate, *, timeout=60.0, interval=0.2, message="condition"):
    """Poll until predicate() is true; fail with a readable message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
