"""The app in a real browser (Debian's /usr/bin/chromium driven by Playwright), served
in-process with the scripted agent. Set GPT4TOOLS_SCREENSHOT=path.png to keep a screenshot
of the chat (docs/screenshot.png is made this way)."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from appserver import ASSETS, server  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    yield ctx
    ctx.close()


def send(page, text: str, image=None) -> None:
    box = page.locator("#chat_input textarea")
    expect(box).to_be_editable(timeout=15_000)  # unlocked after the previous turn
    if image is not None:
        page.locator("#chat_input input[type=file]").set_input_files(image)
        expect(page.locator("#chat_input img")).to_have_count(1)  # the upload preview
    box.fill(text)
    box.press("Enter")


def result_images(page):
    return page.locator("#chatbot .message-row.bot-row img, #chatbot .bot img")


def test_upload_edit_and_follow_up(context, server):  # noqa: F811
    page = context.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(server.url)
    expect(page.locator("#status_line")).to_contain_text("echo-plan")
    send(page, "invert this photo", ASSETS / "chelsea.jpg")
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text("Invert The Image", timeout=15_000)  # the tool step
    expect(chat.locator("img")).to_have_count(2, timeout=15_000)  # the upload and the result
    result = chat.locator("img").nth(1)
    expect(result).to_be_visible()
    assert page.evaluate("i => i.naturalWidth", result.element_handle()) == 451  # really loaded
    expect(chat).to_contain_text(re.compile(r"image/\w+_invert_\w+\.png"), timeout=15_000)  # the final answer
    first = re.search(r"image/\w+_invert_\w+\.png", chat.inner_text()).group(0)
    chat.get_by_text("Invert The Image").first.click()  # unfold the tool step: its input and observation
    expect(chat).to_contain_text(f"Observation: Result saved as {first}", timeout=5_000)
    if os.environ.get("GPT4TOOLS_SCREENSHOT"):
        time.sleep(0.5)
        page.screenshot(path=os.environ["GPT4TOOLS_SCREENSHOT"])

    send(page, "invert it again")  # multi-turn: the agent edits the previous result
    expect(chat.locator("img")).to_have_count(3, timeout=15_000)
    chat.get_by_text("Invert The Image").last.click()  # unfold the second tool step
    expect(chat).to_contain_text("Observation: Result saved as", timeout=5_000)
    assert first in chat.locator(".message-row").last.inner_text() or first in chat.inner_text()
    assert chat.inner_text().count("_invert_") >= 3
    assert outside == []  # no CDN, no analytics: the page talks only to the app


def test_sessions_cannot_see_each_others_images(browser, server):  # noqa: F811
    alice, bob = browser.new_context(), browser.new_context()
    try:
        page = alice.new_page()
        page.goto(server.url)
        send(page, "invert this", ASSETS / "astronaut.jpg")
        expect(page.locator("#chatbot img")).to_have_count(2, timeout=15_000)
        url = page.locator("#chatbot img").nth(1).get_attribute("src")
        assert "gpt4tools-private" in url
        assert alice.request.get(url).status == 200
        other = bob.new_page()
        other.goto(server.url)
        expect(other.locator("#status_line")).to_contain_text("echo-plan")
        assert bob.request.get(url).status == 403  # even with the exact URL
        send(other, "hello")
        expect(other.locator("#chatbot")).to_contain_text("You said: hello", timeout=15_000)
        assert other.locator("#chatbot img").count() == 0 and "invert" not in other.locator("#chatbot").inner_text()
    finally:
        alice.close()
        bob.close()


def test_benchmark_progress_bar_moves(context, server):  # noqa: F811
    from fakes import serve_fake_openai

    url, shutdown = serve_fake_openai("Thought: Do I need to use a tool? No\nAI: ok", delay_s=0.3)
    try:
        page = context.new_page()
        page.goto(server.url)
        page.get_by_role("tab", name="Benchmark").click()
        page.locator("#bench_data input").click()
        page.get_by_role("option", name=re.compile("tiny.jsonl")).click()
        page.locator("#bench_model textarea").fill("fake")
        page.locator("#bench_backend input").click()
        page.get_by_role("option", name="openai").click()
        page.locator("#bench_url textarea").fill(url)
        page.get_by_role("button", name="Run benchmark").click()
        seen, deadline = [], time.time() + 60
        while time.time() < deadline and "✅" not in page.locator("#bench_status").inner_text():
            for text in page.locator(".progress-text").all_inner_texts():
                done = re.match(r"(\d+)/10", text)
                if done and int(done.group(1)) not in seen:
                    seen.append(int(done.group(1)))
            time.sleep(0.1)
        expect(page.locator("#bench_status")).to_contain_text("finished 10/10")
        assert len(seen) >= 3 and seen == sorted(seen), seen  # it moved, forwards
        expect(page.locator("#bench_overall")).to_contain_text("40")  # SR: the 4 no-tool records of 10
    finally:
        shutdown()
