"""The HTTP service, as a site backend uses it: a real `similar-articles serve` on
127.0.0.1 with two workers, driven by httpx."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from similar_articles import Recommender
from similar_articles.batch import run_build

TOKEN = "s3cret-token"
LEMON = {"id": "lemon", "title": "Lemon cake", "body": "A recipe for lemon cake with butter and sugar.",
         "published_at": "2017-03-01T10:00:00Z", "section": "food"}
PROBLEM = "application/problem+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`similar-articles serve` in its own process group, stopped by SIGTERM."""

    def __init__(self, index: Path, *, workers: int = 1, token_file: Path | None = None, extra: tuple = ()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "similar_articles.cli", "serve", "--index", str(index),
                   "--port", str(self.port), "--workers", str(workers), "--cache-max-age", "30", *extra]
        if token_file:
            command += ["--token-file", str(token_file)]
        env = {k: v for k, v in os.environ.items() if k != "SIMILAR_ARTICLES_TOKEN"}
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self.log = open(index.parent / f"server-{self.port}.log", "w+b")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in 120 s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> bool:
        """SIGTERM; whether the server drained and exited cleanly (uvicorn re-raises
        the signal after its graceful shutdown, so -SIGTERM is a clean exit too)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def index(tmp_path_factory, news100, news100_vectors, encoder):
    path = tmp_path_factory.mktemp("service-index")
    Recommender.build(news100[:60], path, embeddings=news100_vectors[:60], encoder=encoder)
    return path


@pytest.fixture(scope="module")
def server(index, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    running = Server(index, workers=2, token_file=token_file)
    yield running
    running.stop()


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    return body


def test_a_box_by_id_with_its_cache_headers(server, news100):
    source = news100[0]["id"]
    response = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == source and body["snapshot"] and len(body["box"]) == 3
    assert set(body["box"][0]) == {"id", "title", "url", "published_at", "section", "score", "similarity",
                                   "reasons", "fallback", "label"}
    assert source not in [item["id"] for item in body["box"]]
    assert response.headers["cache-control"] == "max-age=30"
    again = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 3},
                      headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]
    weak_in_a_list = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 3},
                               headers={"If-None-Match": f'"other", W/{response.headers["etag"]}'})
    assert weak_in_a_list.status_code == 304
    # Filters reach the ranking: an excluded id never shows.
    shown = body["box"][0]["id"]
    filtered = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 3, "exclude": shown}).json()
    assert shown not in [item["id"] for item in filtered["box"]]


def test_bad_requests_are_problems_that_name_the_field(server, news100):
    source = news100[0]["id"]
    problem(httpx.get(f"{server.url}/v1/articles/no-such-id/similar"), 404)
    problem(httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 0}), 422, "k")
    problem(httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": "two"}), 422, "k")
    problem(httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 101}), 422, "k")
    problem(httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"max_age_days": -1}), 422,
             "max_age_days")
    problem(httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"max_age": 3}), 422, "max_age")
    problem(httpx.post(f"{server.url}/v1/similar", content=b"{not json"), 400, "body")
    problem(httpx.post(f"{server.url}/v1/similar", json=["a list"]), 422, "body")
    problem(httpx.post(f"{server.url}/v1/similar", json={"id": "x"}), 422)  # no title or body
    problem(httpx.post(f"{server.url}/v1/similar", content=b"x" * (11 * 1024 * 1024)), 413)
    problem(httpx.get(f"{server.url}/v2/nothing"), 404)


def test_an_unseen_article_gets_its_box(server):
    response = httpx.post(f"{server.url}/v1/similar", params={"k": 2}, timeout=60,
                          json={"id": "draft", "title": "Trump travel ban blocked by court",
                                "body": "A federal judge blocked the immigration order."})
    assert response.status_code == 200, response.text
    assert len(response.json()["box"]) == 2


def test_writes_need_the_token(server, news100):
    url = f"{server.url}/v1/articles"
    problem(httpx.put(url, json=[LEMON]), 401, "Authorization")
    problem(httpx.put(url, json=[LEMON], headers={"Authorization": "Bearer wrong"}), 401)
    problem(httpx.delete(f"{url}/{news100[1]['id']}"), 401)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    problem(httpx.put(url, json={"not": "a list"}, headers=auth), 422, "body")
    problem(httpx.put(url, json=[{"id": str(i), "title": "t"} for i in range(1001)], headers=auth), 413, "body")
    body = problem(httpx.put(url, json=[LEMON, {"id": "no-text"}], headers=auth), 422)
    assert "row 2" in body["detail"] and "lemon" not in httpx.get(f"{server.url}/readyz").text


def test_an_add_through_one_worker_shows_in_every_worker_within_a_second(server, news100):
    pids = {httpx.get(server.url + "/healthz").json()["pid"] for _ in range(40)}
    assert len(pids) == 2  # fresh connections reach both workers

    def tops(source: str) -> set[str]:  # the first item of the box, from 30 fresh connections
        return {httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 1}).json()["box"][0]["id"]
                for _ in range(30)}

    auth = {"Authorization": f"Bearer {TOKEN}"}
    source = news100[10]["id"]
    (top,) = tops(source)
    # The top match taken down through one worker, its text re-published under a new id
    # through another connection: every worker's box of the source shows the new id.
    assert httpx.delete(f"{server.url}/v1/articles/{top}", headers=auth).json()["removed"] == 1
    twin = dict(next(r for r in news100 if r["id"] == top), id="re-published")
    added = httpx.put(f"{server.url}/v1/articles", json=[twin, LEMON], headers=auth, timeout=60)
    assert added.status_code == 200 and added.json()["added"] == 2
    time.sleep(1.0)
    assert tops(source) == {"re-published"}
    assert {httpx.get(f"{server.url}/v1/articles/lemon/similar").status_code for _ in range(30)} == {200}
    assert {httpx.get(f"{server.url}/v1/articles/{top}/similar").status_code for _ in range(30)} == {404}
    assert httpx.delete(f"{server.url}/v1/articles/lemon", headers=auth).json()["removed"] == 1
    time.sleep(1.0)
    assert {httpx.get(f"{server.url}/v1/articles/lemon/similar").status_code for _ in range(30)} == {404}
    problem(httpx.delete(f"{server.url}/v1/articles/lemon", headers=auth), 404, "article_id")


def test_health_readiness_metrics_and_schema(server):
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["articles"] >= 59 and ready["age_seconds"] >= 0
    httpx.get(f"{server.url}/v1/articles/no-such-id/similar")
    text = httpx.get(server.url + "/metrics").text
    assert 'similar_articles_requests_total{method="GET",route="/v1/articles/{article_id}/similar",status="404"}' in text
    assert "similar_articles_request_seconds_bucket" in text and "similar_articles_boxes_total" in text
    assert "similar_articles_snapshot_age_seconds" in text
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/articles/{article_id}/similar" in schema["paths"]


def test_without_a_token_writes_are_off_and_say_how_to_turn_them_on(index):
    server = Server(index)
    try:
        body = problem(httpx.put(f"{server.url}/v1/articles", json=[LEMON]), 403)
        assert "SIMILAR_ARTICLES_TOKEN" in body["detail"] and "--token-file" in body["detail"]
    finally:
        assert server.stop()


def test_a_new_snapshot_is_picked_up_under_load_without_a_failed_request(server, index, news100, news100_vectors,
                                                                         encoder):
    before = httpx.get(server.url + "/readyz").json()["snapshot"]
    failures, done, answered = [], threading.Event(), [0]

    def load():
        with httpx.Client(base_url=server.url) as client:
            while not done.is_set():
                response = client.get(f"/v1/articles/{news100[0]['id']}/similar")
                answered[0] += 1
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        report = run_build(news100[:70], index, encoder=encoder, progress=False, vectors=news100_vectors[:70],
                           gated=False)
        assert report.status == "published"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            versions = {httpx.get(server.url + "/readyz").json()["snapshot"] for _ in range(10)}
            if versions == {Path(report.snapshot).name}:
                break
            time.sleep(0.2)
        assert versions == {Path(report.snapshot).name} != {before}
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert answered[0] > 50 and failures == []


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(article_id=st.text(max_size=40), k=st.one_of(st.integers(-5, 200), st.text(max_size=5)),
       section=st.lists(st.text(max_size=10), max_size=3), max_age=st.one_of(st.none(), st.floats(allow_nan=True)),
       body=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=10))
def test_no_request_reaches_a_server_error(server, article_id, k, section, max_age, body):
    params = {"k": k, "section": section, **({"max_age_days": max_age} if max_age is not None else {})}
    responses = [httpx.get(f"{server.url}/v1/articles/{quote(article_id, safe='')}/similar", params=params),
                 httpx.post(f"{server.url}/v1/similar", params=params, content=json.dumps(body), timeout=60),
                 httpx.put(f"{server.url}/v1/articles", content=json.dumps(body),
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)]
    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text)


def test_sigterm_lets_requests_in_flight_finish(index, news100, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = Server(index, token_file=token_file)
    result = {}

    def slow():  # encoding 40 articles: a request that takes a second or more
        rows = [dict(row, id=f"again-{row['id']}") for row in news100[60:100]]
        result["response"] = httpx.put(f"{server.url}/v1/articles", json=rows, timeout=120,
                                       headers={"Authorization": f"Bearer {TOKEN}"})

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    assert server.stop()
    thread.join()
    assert result["response"].status_code == 200 and result["response"].json()["added"] == 40
    assert "again-" + news100[99]["id"] in Recommender.load(index, reload_interval=None)  # durable
