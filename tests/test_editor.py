"""The editors' page in a real headless browser: Debian's chromium driven by selenium
through chromium-driver, against a real `similar-articles serve` with two workers.
Open it, search, open an article, pin an article into its box and see it there, block
one, see a refused change explained; on a phone's width nothing scrolls sideways.

The screenshot lands in the test's folder; with SIMILAR_ARTICLES_SCREENSHOT=PATH it is
also written to PATH. (docs/editor.png shows the committed seed fixture instead, since
the corpora's text is never committed: `similar-articles build tests/fixtures/seed_box.jsonl`,
a pin and a block through the rules routes, then `chromium --headless --screenshot`.)"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from similar_articles import Recommender
from test_service import TOKEN, Server

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(tmp_path_factory, news100, news100_vectors, encoder):
    path = tmp_path_factory.mktemp("editor-index")
    Recommender.build(news100[:60], path, embeddings=news100_vectors[:60], encoder=encoder)
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    running = Server(path, workers=2, token_file=token_file, extra=("--track-changes",))
    yield running
    running.stop()


def _browser(width: int, height: int, *, mobile: bool = False) -> webdriver.Chrome:
    assert CHROMIUM and DRIVER, "install Debian's chromium and chromium-driver (`make test` does)"
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    if mobile:
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                              "pixelRatio": 2}})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _browser(1100, 1300)
    yield driver
    driver.quit()


def _box(browser) -> list[tuple[str, str]]:
    """(id, label) of each item of the box on the page."""
    return [(item.get_attribute("data-id"), item.find_element(By.CSS_SELECTOR, ".label").text)
            for item in browser.find_elements(By.CSS_SELECTOR, "#box .item")]


def _wait_for_box(browser, condition) -> list[tuple[str, str]]:
    WebDriverWait(browser, 20).until(lambda b: "after=" in b.current_url and condition(_box(b)))
    return _box(browser)


def test_search_open_pin_and_block_in_a_browser(server, browser, news100, tmp_path):
    source = news100[10]
    word = max(source["title"].split(), key=len).strip("'\":,.?!")
    browser.get(server.url + "/editor")
    search = browser.find_element(By.NAME, "q")
    search.send_keys(word)
    search.submit()
    WebDriverWait(browser, 20).until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results a")))
    links = {a.get_attribute("href").split("id=")[1]: a for a in browser.find_elements(By.CSS_SELECTOR, "#results a")}
    assert source["id"] in links
    links[source["id"]].click()
    WebDriverWait(browser, 20).until(ready.presence_of_element_located((By.CSS_SELECTOR, "#box .item")))
    before = _box(browser)
    assert len(before) == 2 and source["title"] in browser.find_element(By.CSS_SELECTOR, "#article h2").text
    assert all(label for _, label in before)
    assert "score" in browser.find_element(By.CSS_SELECTOR, "#box .item small").text

    # A change without the token is refused, and the page says why.
    browser.find_element(By.NAME, "article").send_keys(news100[50]["id"])
    browser.find_element(By.CSS_SELECTOR, "#pin-form button").click()
    WebDriverWait(browser, 20).until(lambda b: "Unauthorised" in b.find_element(By.ID, "status").text)
    assert _box(browser) == before

    # With the token: the pinned article heads the box, as an editor's pick.
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    pick = next(r["id"] for r in reversed(news100[:60]) if r["id"] not in {i for i, _ in before} | {source["id"]})
    field = browser.find_element(By.NAME, "article")
    field.clear()
    field.send_keys(pick)
    browser.find_element(By.CSS_SELECTOR, "#pin-form button").click()
    box = _wait_for_box(browser, lambda box: box and box[0][0] == pick)
    assert box[0] == (pick, "Editor's pick") and box[1][0] == before[0][0]
    assert "pinned" in browser.find_element(By.CSS_SELECTOR, "#box .item").get_attribute("class")
    assert f"pin of '{pick}'" in browser.find_element(By.ID, "rules").text
    assert f"added pin of '{pick}'" in browser.find_element(By.ID, "history").text
    assert _changed(browser)[0] == {source["id"]}  # the box the pin changed, listed under the edit
    # Every worker serves it within a second (the other one at its next refresh): the
    # API agrees from fresh connections.
    deadline = time.monotonic() + 1.5
    while (boxes := {httpx.get(f"{server.url}/v1/articles/{source['id']}/similar").json()["box"][0]["id"]
                     for _ in range(20)}) != {pick}:
        assert time.monotonic() < deadline, f"a worker still shows {boxes - {pick}} first"
        time.sleep(0.1)

    # Block the second item everywhere from the page: it leaves the box.
    browser.get(browser.current_url.split("&after=")[0])
    second = browser.find_elements(By.CSS_SELECTOR, "#box .item")[1]
    gone = second.get_attribute("data-id")
    second.find_element(By.XPATH, ".//button[text()='Block everywhere']").click()
    box = _wait_for_box(browser, lambda box: gone not in {i for i, _ in box})
    assert box[0][0] == pick and len(box) == 2
    assert f"block of '{gone}' everywhere" in browser.find_element(By.ID, "history").text
    blocked_from = _changed(browser)[0]  # every box that showed it, this one among them
    assert source["id"] in blocked_from and len(blocked_from) > 1

    shot = tmp_path / "editor.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SIMILAR_ARTICLES_SCREENSHOT"):
        Path(os.environ["SIMILAR_ARTICLES_SCREENSHOT"]).write_bytes(shot.read_bytes())


def test_an_article_link_from_the_cms_and_a_phone_screen(server, news100):
    phone = _browser(390, 844, mobile=True)
    try:
        phone.get(f"{server.url}/editor?id={news100[3]['id']}")
        assert len(phone.find_elements(By.CSS_SELECTOR, "#box .item")) == 2
        assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert phone.execute_script("return window.innerWidth") == 390
        phone.get(f"{server.url}/editor?id=no-such-article")
        assert "No article 'no-such-article'" in phone.find_element(By.TAG_NAME, "main").text
    finally:
        phone.quit()
    assert httpx.get(f"{server.url}/editor", params={"id": "no-such-article"}).status_code == 404


def _changed(browser) -> list[set[str]]:
    """The ids of the boxes each entry of "Recently changed boxes" links to, newest first."""
    return [{a.get_attribute("href").split("id=")[1] for a in entry.find_elements(By.CSS_SELECTOR, "a")}
            for entry in browser.find_elements(By.CSS_SELECTOR, "#changes li")]
