"""The chat page (examples/static/) in headless Chromium, against the app under uvicorn.

Selenium drives Debian's chromium and chromium-driver (no driver is downloaded);
without them the module is skipped. The app runs on loopback with the memory
store and a scripted provider that streams a word every 40 ms, so a reply is
seen growing. Every test checks that the page fetched nothing from any other
origin (Chromium's performance log) and logged no console error; screenshots
go to tests/examples/screenshots/ (not committed).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("fastapi", reason="the examples extra is not installed")
pytest.importorskip("uvicorn", reason="the examples extra is not installed")
pytest.importorskip("selenium", reason="selenium is not installed (the test extra has it)")

import httpx
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By

from examples.fastapi_chat import create_app, store_from_env
from promptkit_async import Conversations, MemoryStore, ProviderError
from promptkit_async.providers import ScriptedProvider

from ..conftest import free_port
from ._support import ServerThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from selenium.webdriver.chrome.webdriver import WebDriver

    from promptkit_async import Message

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
_MISSING = (
    "needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run installs them)"
)
if (CHROMIUM is None or DRIVER is None) and os.environ.get("PROMPTKIT_REQUIRE_CHROMIUM") == "1":
    raise RuntimeError(f"PROMPTKIT_REQUIRE_CHROMIUM=1, but this {_MISSING}")  # CI: never skip
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason=_MISSING)

SHOTS = Path(__file__).resolve().parent / "screenshots"
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "chat-page.png"
DELAY = 0.04
LONG_WORDS = 400


class Replies:
    """Numbered replies, so a regenerated answer differs; "long..." streams for 16 s,
    "quick..." is one word, "fail..." is a provider error (a 502)."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def __call__(self, messages: Sequence[Message]) -> str:
        question = messages[-1].text
        if question.startswith("fail"):
            raise ProviderError("the scripted provider was asked to fail")
        if question.startswith("quick"):
            return "ok"
        if question.startswith("long"):
            return " ".join(f"w{i}" for i in range(LONG_WORDS))
        return f"answer {next(self.count)} to {question}: one two three four five six"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The app on the memory store; ``"down"`` (indirect): on a Redis that is not there."""
    replies = Replies()
    down = getattr(request, "param", None) == "down"

    def make() -> Conversations:
        provider = ScriptedProvider([replies] * 10_000, delay=DELAY)
        store = (
            store_from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
            if down
            else MemoryStore()
        )
        return Conversations(store, provider=provider, lock_timeout=2)

    thread = ServerThread(create_app(make)).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def browser(server: ServerThread) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,800",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    except WebDriverException as exc:  # installed but cannot start: say so, loudly
        pytest.fail(f"chromium did not start: {exc}")
    driver.set_script_timeout(20)
    try:
        yield driver
        check_clean(driver, server.url)
    finally:
        driver.quit()


_CHECKED: set[str | None] = set()
#: The refusals a test expects, per browser session: the teardown's check allows them too.
_ALLOWED: dict[str | None, set[int]] = {}


def logs(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's log of that kind since the last read (selenium leaves it untyped)."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def check_clean(driver: WebDriver, origin: str, allowed_statuses: Sequence[int] = ()) -> None:
    """Nothing fetched from another origin; no console error but the expected refusals."""
    urls = []
    for entry in logs(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    if driver.session_id not in _CHECKED:  # the logs are drained by reading them
        assert urls, "the performance log recorded no request"
    _CHECKED.add(driver.session_id)
    foreign = [u for u in urls if not u.startswith((origin + "/", "data:"))]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
    errors = [e["message"] for e in logs(driver, "browser") if e["level"] == "SEVERE"]
    allowed = _ALLOWED.setdefault(driver.session_id, set())
    allowed.update(allowed_statuses)
    expected = tuple(f"status of {s} " for s in allowed)
    unexpected = [m for m in errors if not (expected and any(x in m for x in expected))]
    assert not unexpected, f"console errors: {unexpected}"


def wait_for(predicate: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except WebDriverException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def shot(driver: WebDriver, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def open_page(driver: WebDriver, url: str, user: str = "ada") -> None:
    driver.get(url + "/")
    name = driver.find_element(By.ID, "name")
    wait_for(name.is_displayed, what="the name form")
    name.send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "#name-form button").click()
    wait_for(lambda: driver.find_element(By.ID, "who").text == user, what="the user's name")


def bubbles(driver: WebDriver) -> list[tuple[str, str]]:
    """The shown messages as (role, text), oldest first."""
    shown: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#messages .msg')].map((m) =>"
        " [m.classList.contains('user') ? 'user' : 'assistant',"
        " m.querySelector('.text').innerText])"
    )
    return [(role, text) for role, text in shown]


def idle(driver: WebDriver) -> bool:
    """No reply streaming, and the history reloaded after it (every bubble has its id)."""
    done: bool = driver.execute_script(
        "const all = document.querySelectorAll('#messages .msg');"
        "return !document.querySelector('.msg.streaming')"
        " && [...all].every((m) => m.dataset.id)"
    )
    return done


def send(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "input")
    box.clear()  # the page gives back the text of a message it could not send
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def sidebar(driver: WebDriver) -> list[str]:
    return [
        el.text.splitlines()[0]
        for el in driver.find_elements(By.CSS_SELECTOR, "#conversations li")
        if el.text
    ]


def current_id(driver: WebDriver) -> str:
    value: str = driver.execute_script("return localStorage.getItem('promptkit-current')")
    return value


def answer_prompt(driver: WebDriver, text: str | None) -> None:
    def alert() -> Any:
        try:
            return driver.switch_to.alert
        except NoAlertPresentException:
            return None

    dialog = wait_for(alert, what="a dialog")
    if text is not None:
        dialog.send_keys(text)
    dialog.accept()


def history(url: str, session_id: str, user: str = "ada") -> list[tuple[str, str]]:
    r = httpx.get(f"{url}/sessions/{session_id}", headers={"X-User": user})
    assert r.status_code == 200, r.text
    return [(m["role"], m["content"]) for m in r.json()["messages"]]


def test_a_reply_streams_in_and_survives_a_reload_and_a_rename(
    browser: WebDriver, server: ServerThread
) -> None:
    open_page(browser, server.url)
    send(browser, "Hi, I am Ada")
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        streaming = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant.streaming .text")
        if not streaming and seen:
            break
        if streaming:
            text = streaming[0].text
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(0.01)
    wait_for(lambda: idle(browser), what="the turn to end")
    final = "answer 1 to Hi, I am Ada: one two three four five six"
    partial = [s for s in seen if s != final]
    assert len(partial) >= 2, f"the reply did not grow in steps: {seen}"
    assert all(final.startswith(p.strip()) for p in partial)
    assert bubbles(browser) == [("user", "Hi, I am Ada"), ("assistant", final)]
    shot(browser, "after-first-turn")

    browser.refresh()
    wait_for(lambda: len(bubbles(browser)) == 2, what="the history after a reload")
    assert bubbles(browser) == [("user", "Hi, I am Ada"), ("assistant", final)]
    session_id = current_id(browser)
    wait_for(lambda: sidebar(browser) == [session_id], what="the sidebar after a reload")

    browser.find_element(By.ID, "rename").click()
    answer_prompt(browser, "Meeting Ada")
    wait_for(lambda: sidebar(browser) == ["Meeting Ada"], what="the new title")
    browser.refresh()
    wait_for(lambda: sidebar(browser) == ["Meeting Ada"], what="the title after a reload")
    assert browser.find_element(By.ID, "chat-title").text == "Meeting Ada"
    wait_for(lambda: len(bubbles(browser)) == 2, what="the history after the second reload")


def test_regenerate_replaces_exactly_the_last_answer_and_fork_branches(
    browser: WebDriver, server: ServerThread
) -> None:
    open_page(browser, server.url)
    send(browser, "first")
    wait_for(lambda: len(bubbles(browser)) == 2 and idle(browser), what="turn 1")
    send(browser, "second")
    wait_for(lambda: len(bubbles(browser)) == 4 and idle(browser), what="turn 2")
    before = bubbles(browser)
    assert before[3] == ("assistant", "answer 2 to second: one two three four five six")

    browser.find_element(By.CSS_SELECTOR, ".msg.assistant:last-child .regenerate").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".msg.streaming"), what="streaming")
    wait_for(lambda: idle(browser), what="the new answer")
    after = bubbles(browser)
    assert after[:3] == before[:3]
    assert after[3] == ("assistant", "answer 3 to second: one two three four five six")
    source = current_id(browser)
    assert history(server.url, source) == after

    # Fork from the first answer: a new conversation holding the first turn only.
    first_answer = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[0]
    first_answer.find_element(By.CSS_SELECTOR, ".fork").click()
    wait_for(lambda: current_id(browser) != source, what="the fork to open")
    wait_for(lambda: len(sidebar(browser)) == 2, what="the fork in the sidebar")
    fork = current_id(browser)
    assert sidebar(browser)[0] == fork  # newest first
    wait_for(lambda: bubbles(browser) == after[:2], what="the fork's history")
    shot(browser, "after-fork")

    # Edit and resend the first question: a branch with the new question and its answer.
    browser.find_elements(By.CSS_SELECTOR, ".msg.user")[0].find_element(
        By.CSS_SELECTOR, ".edit"
    ).click()
    answer_prompt(browser, "first again")
    wait_for(lambda: current_id(browser) not in (source, fork), what="the edit's branch")
    wait_for(lambda: len(bubbles(browser)) == 2 and idle(browser), what="the edited turn")
    assert bubbles(browser)[0] == ("user", "first again")
    assert bubbles(browser)[1][1].endswith("to first again: one two three four five six")
    wait_for(lambda: len(sidebar(browser)) == 3, what="the edit's branch in the sidebar")

    # Delete the branch: gone from the sidebar and from the store; the others stay.
    branch = current_id(browser)
    browser.find_element(By.ID, "delete").click()
    answer_prompt(browser, None)
    wait_for(lambda: len(sidebar(browser)) == 2, what="the branch to leave the sidebar")
    assert branch not in sidebar(browser) and bubbles(browser) == []
    r = httpx.get(f"{server.url}/sessions/{branch}", headers={"X-User": "ada"})
    assert r.status_code == 404


def test_two_tabs_sending_at_once_make_two_whole_turns(
    browser: WebDriver, server: ServerThread
) -> None:
    open_page(browser, server.url)
    send(browser, "hello")
    wait_for(lambda: len(bubbles(browser)) == 2 and idle(browser), what="turn 1")
    session_id = current_id(browser)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(server.url + "/")  # the same user and conversation, from localStorage
    wait_for(lambda: len(bubbles(browser)) == 2, what="the second tab's history")
    second = browser.current_window_handle

    browser.switch_to.window(first)
    send(browser, "from tab one")
    browser.switch_to.window(second)
    send(browser, "from tab two")
    for handle in (first, second):
        browser.switch_to.window(handle)
        wait_for(lambda: idle(browser), timeout=15, what="both turns")
    kept = history(server.url, session_id)
    assert len(kept) == 6
    assert [role for role, _ in kept] == ["user", "assistant"] * 3
    questions = {kept[2][1], kept[4][1]}
    assert questions == {"from tab one", "from tab two"}
    for i in (2, 4):  # each answer follows its own question, whole
        assert kept[i + 1][1].endswith(f"to {kept[i][1]}: one two three four five six")
    shot(browser, "two-tabs")


def test_closing_a_tab_mid_stream_writes_nothing_and_frees_the_session(
    browser: WebDriver, server: ServerThread
) -> None:
    open_page(browser, server.url)
    send(browser, "hello")
    wait_for(lambda: len(bubbles(browser)) == 2 and idle(browser), what="turn 1")
    session_id = current_id(browser)
    keeper = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(server.url + "/")
    wait_for(lambda: len(bubbles(browser)) == 2, what="the second tab's history")
    send(browser, "long story please")
    wait_for(
        lambda: len(browser.find_element(By.CSS_SELECTOR, ".msg.streaming .text").text) > 10,
        what="the long reply to start",
    )
    browser.close()
    browser.switch_to.window(keeper)

    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{server.url}/sessions/{session_id}/messages",
        json={"content": "next"},
        headers={"X-User": "ada"},
        timeout=10,
    ) as r:
        assert r.status_code == 200, r.read()
        r.read()
    assert time.monotonic() - started < 1.5  # not the lock timeout (2 s), nor the 16 s reply
    kept = history(server.url, session_id)
    assert [text for role, text in kept if role == "user"] == ["hello", "next"]


def test_refusals_read_as_sentences(browser: WebDriver, server: ServerThread) -> None:
    open_page(browser, server.url)
    send(browser, "fail now")
    status = browser.find_element(By.ID, "status")
    wait_for(status.is_displayed, what="the provider error")
    assert status.text.startswith("The model provider failed:")
    assert "asked to fail" in status.text
    assert bubbles(browser) == []  # taken back, and the text is in the box again
    assert browser.find_element(By.ID, "input").get_attribute("value") == "fail now"

    send(browser, "hello")
    wait_for(lambda: len(bubbles(browser)) == 2 and idle(browser), what="a turn")
    session_id = current_id(browser)
    # Another client holds the session with a long turn: the page's message waits
    # the lock timeout (2 s), then reads 429 as a sentence.
    holding = threading.Event()

    def hold() -> None:
        with httpx.stream(
            "POST",
            f"{server.url}/sessions/{session_id}/messages",
            json={"content": "long"},
            headers={"X-User": "ada"},
            timeout=10,
        ) as r:
            for _ in r.iter_bytes():
                holding.set()
                if done.is_set():
                    return

    done = threading.Event()
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert holding.wait(5)
    try:
        send(browser, "are you there")
        wait_for(lambda: "busy" in status.text and status.is_displayed(), timeout=8, what="the 429")
        assert status.text.startswith("This conversation is busy with another reply.")
        assert "Try again in 1 s" in status.text
        shot(browser, "busy")
    finally:
        done.set()
        holder.join(10)
    check_clean(browser, server.url, allowed_statuses=(429, 502))


def test_the_page_for_the_readme(browser: WebDriver, server: ServerThread) -> None:
    """A conversation worth a picture, saved as docs/chat-page.png when it changed size."""
    open_page(browser, server.url)
    for question in ("What does promptkit_async keep?", "And when two tabs send at once?"):
        send(browser, question)
        wait_for(lambda: idle(browser) and len(bubbles(browser)) % 2 == 0, what="a turn")
    wait_for(lambda: len(bubbles(browser)) == 4 and idle(browser), what="two turns")
    browser.find_element(By.ID, "rename").click()
    answer_prompt(browser, "Tour of the library")
    wait_for(lambda: sidebar(browser) == ["Tour of the library"], what="the title")
    send(browser, "long")
    wait_for(
        lambda: len(browser.find_element(By.CSS_SELECTOR, ".msg.streaming .text").text) > 60,
        what="a reply streaming",
    )
    path = shot(browser, "chat-page")
    if DOCS_SHOT.parent.is_dir() and not DOCS_SHOT.exists():
        shutil.copyfile(path, DOCS_SHOT)


@pytest.mark.parametrize("server", ["down"], indirect=True)
def test_a_store_outage_reads_as_a_sentence(browser: WebDriver, server: ServerThread) -> None:
    open_page(browser, server.url)
    status = browser.find_element(By.ID, "status")
    wait_for(status.is_displayed, what="the outage")
    assert status.text.startswith("The conversation store is unreachable; nothing was saved.")
    send(browser, "hello")
    wait_for(lambda: bubbles(browser) == [], what="nothing kept")
    wait_for(
        lambda: status.text.startswith("The conversation store is unreachable"),
        what="the outage, after sending",
    )
    assert browser.find_element(By.ID, "input").get_attribute("value") == "hello"
    shot(browser, "store-down")
    check_clean(browser, server.url, allowed_statuses=(503,))


def test_load_older_pages_back_through_a_long_history(
    browser: WebDriver, server: ServerThread
) -> None:
    session_id = "long-history"
    for i in range(20):  # 40 messages: more than the page's 30
        with httpx.stream(
            "POST",
            f"{server.url}/sessions/{session_id}/messages",
            json={"content": f"quick {i}"},
            headers={"X-User": "ada"},
            timeout=10,
        ) as r:
            assert r.status_code == 200
            r.read()
    open_page(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, f'#conversations li[data-id="{session_id}"]').click()
    wait_for(lambda: len(bubbles(browser)) == 30, what="the newest page")
    assert bubbles(browser)[-2] == ("user", "quick 19")
    older = browser.find_element(By.ID, "load-older")
    assert older.is_displayed()
    older.click()
    wait_for(lambda: len(bubbles(browser)) == 40, what="the older page")
    assert bubbles(browser)[0] == ("user", "quick 0")
    assert [text for role, text in bubbles(browser) if role == "user"] == [
        f"quick {i}" for i in range(20)
    ]
    assert not older.is_displayed()
