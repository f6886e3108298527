"""The pipeline journey in a real browser (issue 23), on tiny settings: build a few records in the
Data tab and browse them, train the small real model on them for a few steps (watched, stopped and
resumed), benchmark the built file beside earlier runs, switch the chat to the adapter just trained
and ask one question.

The app runs in-process; its first agent is the scripted one (tests/fakes.py). The data build, the
training run and the benchmark are real jobs, and the chat's switch loads the real small model with
the trained adapter (transformers), so the journey needs its weights
(`python -m gpt4tools weights fetch smollm2-135m`) and skips without them. Set
GPT4TOOLS_SCREENSHOTS=docs to keep a screenshot of each tab (docs/journey-*.png).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from gpt4tools import paths
from gpt4tools.models import SMALL_MODEL

from appserver import free_port

pytestmark = pytest.mark.browser
pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402
from test_app_browser import browser  # noqa: E402, F401 (fixture)

BUILD_OPTIONS = "--test-per-tool 1 --test-negatives 1 --no-sharegpt --no-photos"
# Enough steps that the ETA (it needs two logged steps) shows while the run still has steps to stop
# in; one sequence per step (no gradient accumulation) keeps a step at 2-8 s on 2 shared cores.
TRAIN_STEPS = 6


@pytest.fixture(scope="module")
def journey_app(tmp_path_factory):
    from gpt4tools import weights

    if not (ready := weights.status(SMALL_MODEL)).ok:
        pytest.skip(f"the journey trains {SMALL_MODEL}: {ready.reason}")
    from gpt4tools.ui import web
    from gpt4tools.ui.jobs import JobRunner

    from fakes import scripted_agent

    def switched(model, adapter, backend):
        """The real model with the picked adapter, on the scripted tools; short turns keep it cheap."""
        from gpt4tools.agent import Agent, AgentConfig
        from gpt4tools.llm import load_llm
        from gpt4tools.prompt import template_for
        from gpt4tools.registry import ToolRegistry

        from fakes import Ask, Invert

        llm = load_llm(model, adapter=adapter, backend=backend)
        return Agent(llm, ToolRegistry([Invert(), Ask()]), template_for(llm.adapter),
                     AgentConfig(max_steps=1, max_retries=0, max_new_tokens=48))

    root = tmp_path_factory.mktemp("journey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT4TOOLS_RUNS", str(root / "runs"))
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        app = web.build_app(scripted_agent(), runner=JobRunner(root / "runs"), switcher=switched)
        port = free_port()
        web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/", root / "runs", app
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
    url, runs, app = journey_app
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

    train(page, runs, built)
    trained = next((runs / "train").glob("*_test_unseen"))

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

    # Chat: switch every session to the adapter just trained (the real model serves it), then ask
    page.get_by_role("tab", name="Chat").click()
    page.locator("#model_switch").get_by_text("Model, adapter and backend").click()
    pick(page, "switch_adapter", re.compile(trained.name))
    expect(page.locator("#switch_model input")).to_have_value(SMALL_MODEL)  # the adapter's base, preselected
    pick(page, "switch_backend", "transformers")
    page.locator("#switch_button").click()
    expect(page.locator("#status_line")).to_contain_text(f"{SMALL_MODEL}+{trained.name}", timeout=60_000)
    expect(page.locator("#status_line")).to_contain_text("transformers (as asked)")
    assert app.chat.holder.agent.llm.adapter == str(trained)  # that very folder serves, not a stand-in
    box = page.locator("#chat_input textarea")
    box.fill("hello adapter")
    box.press("Enter")
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text("hello adapter", timeout=10_000)
    expect(box).to_be_editable(timeout=60_000)  # the turn has ended
    answer = chat.locator(".message-row.bot-row, .bot").last
    expect(answer).to_have_text(re.compile(r"\S"))  # the trained model answered something
    expect(chat).not_to_contain_text("could not be loaded")
    shoot(page, "chat")
    page.close()


def train(page, runs: Path, built: Path) -> None:
    """Train: the estimate, a real run with live loss, tokens/s and ETA, stopped and resumed, then
    the finished adapter listed with its command, data checksum and time."""
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train_estimate")).to_contain_text("Estimate:", timeout=15_000)  # the defaults, on load
    page.locator("#train_data textarea").fill(str(runs / "data" / "missing.jsonl"))
    page.locator("#train_estimate_btn").click()
    expect(page.get_by_text(re.compile("does not exist")).first).to_be_visible(timeout=10_000)  # a clear error
    page.locator("#train_base_model textarea").fill(SMALL_MODEL)
    page.locator("#train_data textarea").fill(str(built))
    page.locator("#train_max_steps input").fill(str(TRAIN_STEPS))
    page.locator("#train_grad_accum input").fill("1")
    # One thread: torch's two stall whenever the browser or the app takes a core; one runs steadily
    page.locator("#train_extra textarea").fill("--threads 1")
    page.locator("#train_estimate_btn").click()
    expect(page.locator("#train_estimate")).to_contain_text(
        re.compile(rf"\d+ records in \d+ sequences.* {TRAIN_STEPS} steps"), timeout=15_000)

    page.locator("#train_run").click()
    expect(page.locator("#train_status")).to_contain_text("started", timeout=10_000)
    eta = page.locator("#train_eta")
    expect(eta).to_contain_text(re.compile(rf"Step [2-{TRAIN_STEPS - 1}]/{TRAIN_STEPS}.*tokens/s.*ETA \d+\.\d min"),
                                timeout=120_000)
    expect(page.locator("#train_curves img")).to_be_visible()  # the live loss and tokens/s
    run = next((runs / "train").glob("*_test_unseen"))
    page.locator("#train_stop").click()  # a run stopped mid-way keeps its steps in a checkpoint
    expect(page.locator("#train_status")).to_contain_text("stopped", timeout=60_000)  # after its step ends
    expect(eta).to_contain_text("Resume", timeout=10_000)
    stopped_at = len((run / "metrics.jsonl").read_text().splitlines())
    assert 2 <= stopped_at < TRAIN_STEPS and (run / "checkpoint" / "trainer_state.pt").is_file()
    assert not (run / "adapter_model.safetensors").exists()  # not listed as a finished adapter

    pick(page, "train_resume_pick", run.name)
    page.locator("#train_resume").click()
    expect(page.locator("#train_status")).to_contain_text("finished", timeout=120_000)
    expect(eta).to_contain_text(f"Step {TRAIN_STEPS}/{TRAIN_STEPS}", timeout=10_000)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TRAIN_STEPS + 1))  # continued from the checkpoint, not started over
    adapters = page.locator("#train_adapters")
    checksum = hashlib.sha256(built.read_bytes()).hexdigest()[:16]
    for shown in (run.name, f"--max-steps {TRAIN_STEPS}", checksum, SMALL_MODEL):
        expect(adapters).to_contain_text(shown, timeout=10_000)
    expect(page.locator("#train_curves img")).to_be_visible()  # loss and tokens/s, drawn
    page.locator("#train_estimate_btn").click()  # the next estimate times by this run's measured speed
    # the run as the tab labels it: relative to the checkout when pytest's temporary folder is inside it
    label = run.relative_to(paths.REPO) if run.is_relative_to(paths.REPO) else run
    expect(page.locator("#train_estimate")).to_contain_text(f"(the speed of {label}", timeout=15_000)
    shoot(page, "train")
