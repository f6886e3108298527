"""The pipeline journey in a real browser (issue 23), on tiny settings: build a few records in the
Data tab and browse them, estimate a training run, benchmark the built file beside earlier runs,
switch the chat to a trained adapter and ask one question.

The app runs in-process with the scripted agent (tests/fakes.py); the data build and the
benchmark are real jobs. Training is not started (it would load a real LLM): a finished run folder
stands in for its output, as train writes it (adapter file and train_config.json). Set
GPT4TOOLS_SCREENSHOTS=docs to keep a screenshot of each tab (docs/journey-*.png).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from appserver import free_port

pytestmark = pytest.mark.browser
pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402
from test_app_browser import browser  # noqa: E402, F401 (fixture)

BUILD_OPTIONS = "--test-per-tool 1 --test-negatives 1 --no-sharegpt --no-photos"


def fake_trained_adapter(runs: Path) -> Path:
    folder = runs / "train" / "20250101-000000_tiny"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text("{}")
    (folder / "train_config.json").write_text(json.dumps({
        "base_model": "smollm2-135m", "records": 8, "total_steps": 2, "train_seconds": 30.0, "train_tokens": 3000,
        "data_sha256": "ef" * 32, "command": "python -m gpt4tools train --max-steps 2"}))
    return folder


@pytest.fixture(scope="module")
def journey_app(tmp_path_factory):
    from gpt4tools.ui import web
    from gpt4tools.ui.jobs import JobRunner

    from fakes import EchoPlanLLM, scripted_agent

    def switched(model, adapter, backend):
        agent = scripted_agent()
        agent.llm = EchoPlanLLM()
        agent.llm.name = f"{model}+{Path(adapter).name if adapter else 'default'}"
        return agent

    root = tmp_path_factory.mktemp("journey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT4TOOLS_RUNS", str(root / "runs"))
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        adapter = fake_trained_adapter(root / "runs")
        app = web.build_app(scripted_agent(), runner=JobRunner(root / "runs"), switcher=switched)
        port = free_port()
        web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/", root / "runs", adapter
        finally:
            app.blocks.close()


def shoot(page, name: str) -> None:
    folder = os.environ.get("GPT4TOOLS_SCREENSHOTS")
    if folder:
        for close in page.locator(".toast-close").all():  # an earlier step's error toast is not this tab's
            close.click()
        page.wait_for_timeout(300)
        page.screenshot(path=str(Path(folder) / f"journey-{name}.png"), full_page=True)


def pick(page, field: str, option) -> None:
    page.locator(f"#{field} input").click()
    page.get_by_role("option", name=option).first.click()


def test_the_journey_from_data_to_chat(browser, journey_app):  # noqa: F811
    url, runs, adapter = journey_app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)

    # Data: a tiny build; its counts, drop reasons and a record with the ReAct output highlighted
    page.get_by_role("tab", name="Data").click()
    pick(page, "data_split", "test")
    page.locator("#data_extra textarea").fill(BUILD_OPTIONS)
    page.locator("#data_run").click()
    expect(page.locator("#data_status")).to_contain_text("finished", timeout=90_000)
    expect(page.locator("#data_summary")).to_contain_text("records kept", timeout=15_000)
    expect(page.locator("#data_counts")).to_contain_text("positive")
    page.get_by_role("tab", name="Records").click()
    expect(page.locator("#data_record")).to_contain_text("Record 1 of", timeout=15_000)
    expect(page.locator("#data_record strong").filter(has_text="Thought:").first).to_be_visible()  # highlighted
    expect(page.locator("#data_record details")).not_to_have_attribute("open", "")  # the prompt is folded
    page.locator("#data_next").click()
    expect(page.locator("#data_record")).to_contain_text("Record 2 of")
    shoot(page, "data")
    built = next((runs / "data").glob("*_build-test/test_unseen.jsonl"))

    # Train: the estimate for the built records, and the finished adapter with its command
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train_estimate")).to_contain_text("Estimate:", timeout=15_000)  # the defaults, on load
    page.locator("#train_data textarea").fill(str(built))
    page.locator("#train_estimate_btn").click()
    expect(page.locator("#train_estimate")).to_contain_text(re.compile(r"\d+ records in \d+ sequences"),
                                                            timeout=15_000)
    expect(page.locator("#train_adapters")).to_contain_text("20250101-000000_tiny")
    expect(page.locator("#train_adapters")).to_contain_text("--max-steps 2")
    page.locator("#train_data textarea").fill(str(runs / "data" / "missing.jsonl"))
    page.locator("#train_estimate_btn").click()
    expect(page.get_by_text(re.compile("does not exist")).first).to_be_visible(timeout=10_000)  # a clear error
    shoot(page, "train")

    # Benchmark: the committed split is preselected with its committed runs; then the built file
    page.get_by_role("tab", name="Benchmark").click()
    expect(page.locator("#bench_heading")).to_contain_text("data/val.jsonl", timeout=15_000)
    expect(page.locator("#bench_overall")).to_contain_text("docs/val10_tuned")
    pick(page, "bench_data", f"{built.parent.name}/{built.name}")  # a substring of its label
    page.locator("#bench_baseline input").check()
    page.locator("#bench_run").click()
    expect(page.locator("#bench_status")).to_contain_text("finished", timeout=90_000)
    expect(page.locator("#bench_overall")).to_contain_text("(this run)", timeout=15_000)
    shoot(page, "benchmark")

    # Chat: switch to the trained adapter for every session, then ask
    page.get_by_role("tab", name="Chat").click()
    page.locator("#model_switch").get_by_text("Model, adapter and backend").click()
    pick(page, "switch_adapter", re.compile("20250101-000000_tiny"))
    expect(page.locator("#switch_model input")).to_have_value("smollm2-135m")  # the adapter's base, preselected
    page.locator("#switch_button").click()
    expect(page.locator("#status_line")).to_contain_text("smollm2-135m+20250101-000000_tiny", timeout=20_000)
    box = page.locator("#chat_input textarea")
    box.fill("hello adapter")
    box.press("Enter")
    expect(page.locator("#chatbot")).to_contain_text("You said: hello adapter", timeout=20_000)
    shoot(page, "chat")
    page.close()
