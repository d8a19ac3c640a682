"""The changed-boxes webhook: a real receiver on 127.0.0.1 that fails a given number of
times; the sender retries with backoff, gives up into the dead-letter file, never
blocks the caller; and a real `similar-articles serve --webhook` posts what a PUT and
a DELETE changed."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from similar_articles import Recommender
from similar_articles.service.webhook import DEAD_LETTER_FILE, Webhook
from test_service import LEMON, TOKEN, Server

PAYLOAD = {"event": "boxes.changed", "live_update": 7, "boxes": [{"id": "a1", "change": "box"}]}


class Receiver:
    """An HTTP receiver that answers 500 to its first ``failures`` POSTs, then 200."""

    def __init__(self, failures: int = 0):
        self.failures, self.posts, self.times = failures, [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.times.append(time.monotonic())
                receiver.posts.append(body)
                failed = len(receiver.posts) <= receiver.failures
                self.send_response(500 if failed else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.posts

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    made = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_failing_receiver_gets_the_payload_after_retries_with_backoff(tmp_path, receiver):
    hook_receiver = receiver(failures=2)
    hook = Webhook(hook_receiver.url, tmp_path / DEAD_LETTER_FILE, attempts=4, backoff=0.2)
    started = time.monotonic()
    hook.send(PAYLOAD)
    assert time.monotonic() - started < 0.05  # the caller never waits for the POST
    assert hook_receiver.wait_for(3) == [PAYLOAD] * 3
    gaps = [b - a for a, b in zip(hook_receiver.times, hook_receiver.times[1:])]
    assert 0.2 <= gaps[0] < 0.4 and 0.4 <= gaps[1] < 0.8  # 0.2 s, then twice that
    hook.close()
    assert hook.sent == 1 and hook.failed == 0 and not (tmp_path / DEAD_LETTER_FILE).exists()


def test_after_the_last_try_the_payload_is_kept_in_the_dead_letter_file(tmp_path, receiver):
    hook_receiver = receiver(failures=10)
    hook = Webhook(hook_receiver.url, tmp_path / DEAD_LETTER_FILE, attempts=3, backoff=0.05)
    hook.send(PAYLOAD)
    hook.send({**PAYLOAD, "live_update": 8})
    assert len(hook_receiver.wait_for(6)) == 6  # three tries each, in order
    hook.close()
    lines = [json.loads(line) for line in (tmp_path / DEAD_LETTER_FILE).read_text().splitlines()]
    assert [line["payload"]["live_update"] for line in lines] == [7, 8]
    assert all(line["attempts"] == 3 and "HTTP 500" in line["error"] and line["url"] == hook_receiver.url
               for line in lines)
    # No receiver at all: a connection error, kept the same way.
    hook = Webhook("http://127.0.0.1:9/nothing", tmp_path / "other.jsonl", attempts=2, backoff=0.01)
    hook.send(PAYLOAD)
    hook.close()
    assert "no answer" in json.loads((tmp_path / "other.jsonl").read_text())["error"]


def test_the_service_posts_what_a_write_changed(tmp_path, receiver, news100, news100_vectors, encoder):
    """serve --webhook: a PUT's, a DELETE's and a rules edit's changed boxes reach the
    receiver (which fails once first); every box that now shows the new article is
    among them; a block changes exactly the boxes that showed the article."""
    index = tmp_path / "index"
    Recommender.build(news100[:60], index, embeddings=news100_vectors[:60], encoder=encoder)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    hook_receiver = receiver(failures=1)
    server = Server(index, token_file=token_file,
                    extra=("--webhook", hook_receiver.url, "--webhook-backoff", "0.1"))
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        follow_up = {**news100[3], "id": "follow-up", "title": news100[3]["title"] + " (follow-up)",
                     "published_at": "2017-03-30T10:00:00Z"}
        answer = httpx.put(server.url + "/v1/articles", json=[follow_up, LEMON], headers=auth, timeout=60).json()
        posts = hook_receiver.wait_for(2)
        assert posts[0] == posts[1] and posts[0]["event"] == "boxes.changed"
        assert posts[0]["live_update"] == answer["live_update"] and len(posts[0]["boxes"]) == answer["changed_boxes"]
        changed = {b["id"] for b in posts[0]["boxes"] if b["change"] == "box"}
        assert {b["id"] for b in posts[0]["boxes"] if b["change"] == "added"} == {"follow-up", "lemon"}
        showing = {row["id"] for row in news100[:60]
                   if "follow-up" in [item["id"] for item in httpx.get(
                       f"{server.url}/v1/articles/{row['id']}/similar").json()["box"]]}
        assert showing and showing <= changed

        answer = httpx.delete(server.url + "/v1/articles/follow-up", headers=auth, timeout=60).json()
        removal = hook_receiver.wait_for(3)[2]
        assert {"id": "follow-up", "change": "removed"} in removal["boxes"]
        assert showing <= {b["id"] for b in removal["boxes"] if b["change"] == "box"}
        assert removal["live_update"] == answer["live_update"]

        # A rules edit: the boxes the block took the article out of, with the rules' versions.
        shown = next(item["id"] for row in news100[:60]
                     for item in httpx.get(f"{server.url}/v1/articles/{row['id']}/similar").json()["box"])
        showing = {row["id"] for row in news100[:60] if shown in [item["id"] for item in httpx.get(
            f"{server.url}/v1/articles/{row['id']}/similar").json()["box"]]}
        assert httpx.post(server.url + "/v1/rules/blocks", json={"article": shown}, headers=auth, timeout=60).is_success
        edit = hook_receiver.wait_for(4)[3]
        assert edit["rules"] == {"from": 0, "to": 1} and {b["change"] for b in edit["boxes"]} == {"box"}
        assert {b["id"] for b in edit["boxes"]} == showing
        time.sleep(1.5)  # the other worker follows the edit within a second: it does not post it again
        assert len(hook_receiver.posts) == 4
    finally:
        assert server.stop()
    assert not (index / DEAD_LETTER_FILE).exists()
