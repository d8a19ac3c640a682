"""The rules routes of the HTTP service, as a CMS or an editors' tool uses them: a real
`similar-articles serve` on 127.0.0.1 with two workers (test_service.Server), driven by
httpx: read openly, change with the bearer token, every worker within a second."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

from test_service import TOKEN, Server, index, problem, server  # noqa: F401 (the same 2-worker server fixtures)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _rules(server) -> dict:
    return httpx.get(f"{server.url}/v1/rules").json()


def _boxes(server, source: str, **params) -> list[list[dict]]:
    """The box of ``source`` from 30 fresh connections (both workers answer some)."""
    return [httpx.get(f"{server.url}/v1/articles/{source}/similar", params=params).json()["box"] for _ in range(30)]


def test_rules_are_read_openly_and_changed_only_with_the_token(server, news100):
    response = httpx.get(f"{server.url}/v1/rules")
    assert response.status_code == 200 and response.headers["etag"] == f'"{response.json()["version"]}"'
    before = response.json()
    pin = {"article": news100[5]["id"], "into": news100[0]["id"]}
    problem(httpx.post(f"{server.url}/v1/rules/pins", json=pin), 401, "Authorization")
    problem(httpx.post(f"{server.url}/v1/rules/pins", json=pin, headers={"Authorization": "Bearer wrong"}), 401)
    problem(httpx.put(f"{server.url}/v1/rules/policies/tass", json={"k": 3}), 401)
    problem(httpx.delete(f"{server.url}/v1/rules/blocks/x"), 401)
    assert _rules(server) == before


def test_a_pin_and_a_block_reach_every_worker_within_a_second(server, news100):
    pids = {httpx.get(server.url + "/healthz").json()["pid"] for _ in range(40)}
    assert len(pids) == 2  # fresh connections reach both workers
    source = news100[10]["id"]
    (plain,) = {tuple(item["id"] for item in box) for box in _boxes(server, source, k=2)}
    pick = next(r["id"] for r in reversed(news100[:60]) if r["id"] not in plain and r["id"] != source)
    old_etag = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 2}).headers["etag"]

    made = httpx.post(f"{server.url}/v1/rules/pins", json={"article": pick, "into": source, "slot": 1},
                      headers=AUTH)
    assert made.status_code == 200 and made.json()["pins"][0]["article"] == pick
    version = made.json()["version"]
    blocked = httpx.post(f"{server.url}/v1/rules/blocks", json={"article": plain[0]}, headers={
        **AUTH, "If-Match": f'"{version}"'})
    assert blocked.status_code == 200 and blocked.json()["version"] == version + 1
    time.sleep(1.0)
    boxes = _boxes(server, source, k=2)
    assert {box[0]["id"] for box in boxes} == {pick}
    assert {box[0]["label"] for box in boxes} == {"Editor's pick"} and boxes[0][0]["reasons"][0] == "editor's pick"
    assert all(plain[0] not in {item["id"] for item in box} for box in boxes)
    again = httpx.get(f"{server.url}/v1/articles/{source}/similar", params={"k": 2},
                      headers={"If-None-Match": old_etag})
    assert again.status_code == 200 and again.headers["etag"] != old_etag  # a cached box is not kept

    assert httpx.delete(f"{server.url}/v1/rules/pins/{pick}", params={"into": source}, headers=AUTH).status_code == 200
    assert httpx.delete(f"{server.url}/v1/rules/blocks/{plain[0]}", headers=AUTH).status_code == 200
    time.sleep(1.0)
    assert {tuple(item["id"] for item in box) for box in _boxes(server, source, k=2)} == {plain}
    problem(httpx.delete(f"{server.url}/v1/rules/pins/{pick}", headers=AUTH), 404)
    problem(httpx.delete(f"{server.url}/v1/rules/blocks/{pick}", params={"from": source}, headers=AUTH), 404)


def test_a_section_policy_through_the_service(server, news100):
    section = news100[3]["section"]
    made = httpx.put(f"{server.url}/v1/rules/policies/{section}", json={"k": 4, "half_life_days": 3},
                     headers=AUTH)
    assert made.status_code == 200 and made.json()["policies"][section] == {"k": 4, "half_life_days": 3}
    time.sleep(1.0)
    assert {len(box) for box in _boxes(server, news100[3]["id"])} == {4}  # no k given: the policy's
    assert {len(box) for box in _boxes(server, news100[3]["id"], k=2)} == {2}
    assert httpx.delete(f"{server.url}/v1/rules/policies/{section}", headers=AUTH).status_code == 200
    problem(httpx.delete(f"{server.url}/v1/rules/policies/{section}", headers=AUTH), 404)


def test_a_bad_rule_is_a_422_naming_it_and_the_rules_stay(server, news100):
    before = _rules(server)
    source = news100[0]["id"]
    body = problem(httpx.post(f"{server.url}/v1/rules/pins", json={"article": "p", "into": source, "slot": 0},
                               headers=AUTH), 422, "pin")
    assert "slot=0" in body["detail"]
    problem(httpx.post(f"{server.url}/v1/rules/pins", json={"article": "p"}, headers=AUTH), 422, "pin")
    problem(httpx.post(f"{server.url}/v1/rules/blocks", json={"article": "p", "colour": 1}, headers=AUTH), 422,
             "block")
    problem(httpx.put(f"{server.url}/v1/rules/policies/tass", json={"k": 0}, headers=AUTH), 422,
             "policies['tass']")
    problem(httpx.post(f"{server.url}/v1/rules/pins", json=["not", "an", "object"], headers=AUTH), 422, "body")
    problem(httpx.post(f"{server.url}/v1/rules/pins", content=b"{nope", headers=AUTH), 400, "body")
    document = {**before, "pins": [{"article": "a", "into": "b"}, {"article": "c", "tag": "t", "until": "soon"}]}
    body = problem(httpx.put(f"{server.url}/v1/rules", json=document, headers=AUTH), 422, "pins[1]")
    assert "until='soon'" in body["detail"]
    problem(httpx.delete(f"{server.url}/v1/rules/pins/x", params={"into": "a", "tag": "b"}, headers=AUTH), 422)
    assert _rules(server) == before


def test_edits_made_from_an_old_version_are_refused_with_409(server):
    current = _rules(server)
    stale = current["version"] - 1 if current["version"] else current["version"] + 5
    problem(httpx.post(f"{server.url}/v1/rules/blocks", json={"article": "zz"},
                        headers={**AUTH, "If-Match": f'"{stale}"'}), 409, "If-Match")
    problem(httpx.put(f"{server.url}/v1/rules", json={**current, "version": stale, "blocks": []}, headers=AUTH), 409)
    problem(httpx.put(f"{server.url}/v1/rules", json={"pins": []}, headers=AUTH), 422, "version")
    replaced = httpx.put(f"{server.url}/v1/rules", json={**current, "blocks": [{"article": "zz"}]}, headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["version"] == current["version"] + 1
    assert replaced.json()["blocks"] == [{"article": "zz", "from": None}]


def test_without_a_token_rule_changes_are_off(index):
    running = Server(index, workers=1)
    try:
        assert httpx.get(f"{running.url}/v1/rules").status_code == 200
        body = problem(httpx.post(f"{running.url}/v1/rules/blocks", json={"article": "x"}, headers=AUTH), 403)
        assert "SIMILAR_ARTICLES_TOKEN" in body["detail"]
    finally:
        assert running.stop()


FIELDS = st.sampled_from(["article", "into", "section", "tag", "slot", "from", "until", "k", "kinds", "language",
                          "half_life_days", "max_age_days", "sections", "exclude_kinds", "version", "pins"])
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(FIELDS, VALUES, max_size=5) | VALUES, name=st.text(min_size=1, max_size=12))
def test_no_rules_request_reaches_a_server_error(server, body, name):
    """Whatever a client sends, a rules route answers it (2xx or a 4xx naming the
    problem), and the rules file stays a valid document."""
    text = json.dumps(body)  # NaN and Infinity too, as Python's json writes them
    path = quote(name, safe="")
    responses = [httpx.post(f"{server.url}/v1/rules/pins", content=text, headers=AUTH),
                 httpx.post(f"{server.url}/v1/rules/blocks", content=text, headers=AUTH),
                 httpx.put(f"{server.url}/v1/rules/policies/{path}", content=text, headers=AUTH),
                 httpx.put(f"{server.url}/v1/rules", content=text, headers=AUTH),
                 httpx.delete(f"{server.url}/v1/rules/pins/{path}", params={"into": name}, headers=AUTH),
                 httpx.get(f"{server.url}/editor", params={"q": name, "id": name})]
    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text)
    assert httpx.get(f"{server.url}/v1/rules").status_code == 200
