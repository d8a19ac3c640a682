"""The changed-boxes webhook: each live update this worker accepted is POSTed as JSON
to a configured URL from a background thread, so a request never waits for it. A
failed POST (no answer, or not 2xx) is tried again after 0.5, 1, 2, 4 ... seconds;
after the last try the payload goes to a dead-letter file (JSON lines in the index
folder) with the error, for an operator to replay. The payload: docs/http.md."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__

log = logging.getLogger(__name__)
DEAD_LETTER_FILE = "webhook-dead-letter.jsonl"
_STOP = object()


class Webhook:
    """POSTs payloads to ``url``, in order, from one daemon thread.

    attempts: tries a payload gets (the first and the retries).
    backoff: seconds before the first retry, doubling after each.
    timeout: seconds a POST may take.
    queue_size: payloads waiting at most; past it a payload goes to the dead letter.
    """

    def __init__(self, url: str, dead_letter: Path, *, attempts: int = 5, backoff: float = 0.5,
                 timeout: float = 5.0, queue_size: int = 10_000):
        self.url, self.dead_letter = url, Path(dead_letter)
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self.sent = self.failed = 0
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="similar-articles-webhook")
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        """Queue ``payload``; never blocks."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self._dead(payload, f"more than {self._queue.maxsize} payloads waiting", 0)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (a retry wait is cut short: the payload goes to the dead
        letter), then stop the thread."""
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (payload := self._queue.get()) is not _STOP:
            error, tries = self._deliver(payload)
            if error:
                self._dead(payload, error, tries)
            else:
                self.sent += 1

    def _deliver(self, payload: dict[str, Any]) -> tuple[str, int]:
        """('' or the last error, tries made)."""
        error = ""
        for attempt in range(self.attempts):
            if attempt and self._stopping.wait(self.backoff * 2 ** (attempt - 1)):
                return f"{error}; the service stopped before the next try", attempt
            error = self._post(payload)
            if not error:
                return "", attempt + 1
        return error, self.attempts

    def _post(self, payload: dict[str, Any]) -> str:
        """'' when the receiver answered 2xx, else what went wrong."""
        request = urllib.request.Request(
            self.url, data=json.dumps(payload, ensure_ascii=False).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"similar-articles/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            return ""
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} from {self.url}"
        except (OSError, ValueError) as exc:
            return f"no answer from {self.url}: {exc}"

    def _dead(self, payload: dict[str, Any], error: str, attempts: int) -> None:
        self.failed += 1
        log.error("similar-articles: webhook gave up on live update %s after %d tries (%s); kept in %s",
                  payload.get("live_update"), attempts, error, self.dead_letter)
        line = json.dumps({"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "url": self.url,
                           "attempts": attempts, "error": error, "payload": payload}, ensure_ascii=False) + "\n"
        fd = os.open(self.dead_letter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))  # one write: lines of several workers never interleave
        finally:
            os.close(fd)
