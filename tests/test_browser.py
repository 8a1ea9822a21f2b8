"""The web page in a real browser: headless Chromium (Debian's ``chromium`` package) driven by
Playwright, against the real server (uvicorn on a free loopback port in a thread).

Skipped when /usr/bin/chromium is missing, unless ``CI`` is set: then it fails, so that a CI
machine without the browser cannot pass silently.
"""
import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists() or os.environ.get("RNNLAB_SKIP_BROWSER"):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing on CI: apt-get install chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from rnnlab.config import ServeConfig  # noqa: E402
from rnnlab.serve import create_app  # noqa: E402
from tiny_keyboard_model import tiny_checkpoint  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def server_url():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_checkpoint(), ServeConfig(suggest_worker="thread")), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def page(server_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page()
        external = []
        page.on("request", lambda r: None if r.url.startswith(server_url) else external.append(r.url))
        page.goto(server_url + "/")
        yield page
        assert external == [], f"the page fetched from outside the app: {external}"
        browser.close()


def _type_and_wait(page, text):
    box = page.locator("#text")
    box.fill("")
    box.press_sequentially(text, delay=20)
    # the suggestions drawn are those for the whole typed text (not a stale keystroke's)
    page.wait_for_function("t => document.getElementById('completions').dataset.for === t", arg=text,
                           timeout=15000)


def test_typing_shows_suggestions_and_tab_accepts_the_top_one(page):
    playwright.expect(page.locator("#model-info")).to_contain_text("LSTM")
    playwright.expect(page.locator("#model-info")).to_contain_text("word search")  # the served word search
    _type_and_wait(page, "the time trav")
    top = page.locator("#completions .chip.top")
    playwright.expect(top).to_contain_text("traveller")
    assert page.locator("#next-chars .chip").count() == 5
    page.locator("#text").press("Tab")
    playwright.expect(page.locator("#text")).to_have_value("the time traveller ")
    # the page asks again for the new text: now it is a new word's turn
    page.wait_for_function("document.getElementById('completions').dataset.for === 'the time traveller '")


def test_the_page_shows_the_served_words(page, server_url):
    """The page draws the words `rnnlab suggest` and the library give for the same text."""
    from rnnlab.suggest import load_engine

    engine = load_engine(tiny_checkpoint())
    try:
        for text in ("we sat in the ", "the psychologist looked at the m"):
            _type_and_wait(page, text)
            shown = page.evaluate("Array.from(document.querySelectorAll('#completions .chip'), "
                                  "b => b.firstChild.textContent)")  # each chip: the word, then its probability
            assert shown == [c.word for c in engine.suggest(text, 5).completions]
    finally:
        engine.close()


def test_clicking_a_completion_or_a_character_edits_the_text(page):
    _type_and_wait(page, "we sat in the gar")
    page.locator("#completions .chip.top").click()
    playwright.expect(page.locator("#text")).to_have_value("we sat in the garden ")
    _type_and_wait(page, "the psy")
    page.locator("#next-chars .chip").first.click()
    assert page.locator("#text").input_value().startswith("the psy") and len(page.locator("#text").input_value()) == 8


def test_continue_button_streams_generated_text(page):
    _type_and_wait(page, "the time ")
    page.locator("#temperature").fill("0")
    page.locator("#length").fill("25")
    page.locator("#continue").click()
    page.wait_for_function("document.getElementById('text').value.length >= 'the time '.length + 25",
                           timeout=15000)
    playwright.expect(page.locator("#continue")).to_be_enabled()
    value = page.locator("#text").input_value()
    assert value.startswith("the time ") and len(value) == len("the time ") + 25
    assert "traveller" in value or "machine" in value  # greedy text of the sentences it learnt
