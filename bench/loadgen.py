"""A bounded HTTP load generator: N concurrent clients for a fixed time or request count, run as its own process.

    python -m bench.loadgen --base http://127.0.0.1:8000 --paths paths.txt --clients 8 --duration 20
    python -m bench.loadgen --base http://127.0.0.1:8000 --post /api/v1/search/ --photo shoe.jpg \
        --field limit=12 --clients 32 --duration 60 --expect '"results"' --json out.json

Each client is a thread with its own connection (reopened when the server closes it, as gunicorn's sync workers
do after every response). GET paths are picked at random from ``--paths``; with ``--post`` every request sends
the same multipart body, ``--photo`` in the field ``--photo-field``. A request is an error when it fails to connect, times out,
answers other than 200, or lacks the ``--expect`` text. The summary (JSON on stdout, or in ``--json``) has the
count, errors by kind (with a few samples), throughput and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict = field(default_factory=dict)


def multipart(*, photo: Path, field_name: str, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{photo.name}"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode() + photo.read_bytes() + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    def __init__(self, *, host: str, port: int, requests: list[Request], expect: bytes | None, timeout: float,
                 run: Run, seed: int):
        super().__init__(daemon=True)
        self.host, self.port, self.requests, self.expect, self.timeout = host, port, requests, expect, timeout
        self.run_state = run
        self.random = random.Random(seed)
        self.connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        while self.run_state.take():
            request = self.random.choice(self.requests)
            started = time.perf_counter()
            error = self.send(request)
            self.run_state.record(time.perf_counter() - started, error)

    def send(self, request: Request) -> str | None:
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.connection.request(request.method, request.path, body=request.body, headers=request.headers)
            response = self.connection.getresponse()
            body = response.read()
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return f"{type(error).__name__}: {error}"
        if response.status != 200:
            return f"HTTP {response.status} {request.path}: {body[:200]!r}"
        if self.expect is not None and self.expect not in body:
            return f"unexpected body {request.path}: {body[:200]!r}"
        return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Run:
    """Shared between clients: hands out the allowed requests and collects timings and errors."""

    def __init__(self, *, duration: float, max_requests: int | None):
        self.deadline = time.monotonic() + duration
        self.remaining = max_requests
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []

    def take(self) -> bool:
        with self.lock:
            if time.monotonic() >= self.deadline or self.remaining == 0:
                return False
            if self.remaining is not None:
                self.remaining -= 1
            return True

    def record(self, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if error:
                self.errors[error.split(":")[0]] += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(error)


def run_load(*, base: str, requests: list[Request], clients: int, duration: float, max_requests: int | None = None,
             expect: bytes | None = None, timeout: float = 30.0) -> dict:
    address = urlsplit(base)
    run = Run(duration=duration, max_requests=max_requests)
    threads = [
        Client(host=address.hostname, port=address.port or 80, requests=requests, expect=expect, timeout=timeout,
               run=run, seed=seed)
        for seed in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies_ms = np.array(run.latencies) * 1000 if run.latencies else np.zeros(1)
    return {
        "clients": clients,
        "requests": len(run.latencies),
        "errors": sum(run.errors.values()),
        "error_kinds": dict(run.errors),
        "error_samples": run.error_samples,
        "seconds": round(elapsed, 3),
        "throughput": round(len(run.latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies_ms, 95)), 2),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 2),
        "max_ms": round(float(latencies_ms.max()), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="http://host:port of the site")
    parser.add_argument("--paths", type=Path, help="file of GET paths, one per line")
    parser.add_argument("--post", help="path to POST the photo to, e.g. /api/v1/search/")
    parser.add_argument("--photo", type=Path, help="the photo to send")
    parser.add_argument("--photo-field", default="image", help="its multipart field name (default: image, as the API)")
    parser.add_argument("--field", action="append", default=[], help="extra form field NAME=VALUE (repeatable)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (the run stops at whichever comes first)")
    parser.add_argument("--max-requests", type=int, help="total requests over all clients")
    parser.add_argument("--expect", help="text every response body must contain")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", type=Path, help="write the summary here instead of stdout")
    args = parser.parse_args(argv)

    if args.post:
        if not args.photo:
            parser.error("--post needs --photo")
        body, content_type = multipart(photo=args.photo, field_name=args.photo_field, fields=dict(item.split("=", 1) for item in args.field))
        requests = [Request("POST", args.post, body, {"Content-Type": content_type})]
    elif args.paths:
        requests = [Request("GET", line.strip()) for line in args.paths.read_text().splitlines() if line.strip()]
    else:
        parser.error("give --paths or --post")
    summary = run_load(base=args.base, requests=requests, clients=args.clients, duration=args.duration,
                       max_requests=args.max_requests, expect=args.expect.encode() if args.expect else None,
                       timeout=args.timeout)
    text = json.dumps(summary, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
