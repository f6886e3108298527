"""The paper's scorer, rule by rule (REFERENCE.md §6 and the original evaluate_result.py)."""

from __future__ import annotations

import math

import pytest

from gpt4tools import react
from gpt4tools.metrics import NO_TOOL, SampleScore, bleu1, reference_tool, score_sample, step_args_score, summarize

IMG = "image/abcdefgh.png"
BLEU_EXACT = pytest.approx(1.0, abs=1e-8)  # pycocoevalcap's smoothing leaves ~1e-9 off an exact match


def call(tool: str, args: str, obs: str = "") -> str:
    """A tool step as references and models write it."""
    return react.render_call(react.ToolCall(tool, args)) + (f" {obs}\n" if obs else "")


def final(text: str = "Here it is.") -> str:
    return react.render_final(react.FinalAnswer(text))


# -- BLEU-1 ------------------------------------------------------------------------------
def test_bleu1_brevity_penalty_red_apple():
    # 1 of 1 predicted words correct, but 1 word against 2: penalty exp(1 - 2/1).
    assert bleu1("apple", "red apple") == pytest.approx(math.exp(1 - 2 / 1), rel=1e-6)


def test_bleu1_clips_repeated_words_and_skips_penalty_when_longer():
    assert bleu1("a a a", "a cat") == pytest.approx(1 / 3, rel=1e-6)  # "a" counted once
    assert bleu1("green apple", "red apple") == pytest.approx(0.5, abs=1e-8)


def test_bleu1_exact_case_and_empty():
    assert bleu1("red apple", "red apple") == BLEU_EXACT
    assert bleu1("red apple", "red apple") < 1.0  # as pycocoevalcap computes it
    assert bleu1("Red", "red") == pytest.approx(0.0, abs=1e-6)  # case-sensitive
    assert bleu1("", "cat") == 0.0
    assert bleu1("", "") == 0.0  # pycocoevalcap gives 0 here too (ratio 1e-6)
    assert bleu1("  red   apple ", "red apple") == BLEU_EXACT  # whitespace tokens


def test_step_args_rules():
    assert step_args_score(f"{IMG}, cat", "image/zzzzzzzz.png, cat") == BLEU_EXACT  # file names not compared
    assert step_args_score(IMG, "image/other.png") == 1.0
    assert step_args_score(f"{IMG}, cat", "the photo, cat") == 0.0  # image part not an image: step 0
    assert step_args_score(f"{IMG}, cat", IMG) == 0.0  # different argument counts
    assert step_args_score(f"{IMG}, cat", f"{IMG},cat") == BLEU_EXACT  # no strip, but BLEU splits on spaces
    assert step_args_score(f"{IMG}, red apple", f"{IMG}, apple") == pytest.approx((1 + math.exp(-1)) / 2, rel=1e-6)


# -- tool references -----------------------------------------------------------------------
SEG = "Segment the Image"
DETECT = "Detect the Give Object"


def test_exact_tool_step_succeeds():
    ref = call(DETECT, f"{IMG}, cat")
    s = score_sample(ref, ref)
    assert (s.sr_t, s.sr_act, s.success, s.uses_tool) == (1.0, 1.0, True, True)
    assert s.sr_args == BLEU_EXACT and s.iou == BLEU_EXACT


def test_roundtrip_of_react_writer_with_final_answer():
    ref = call(SEG, IMG, "Result saved as image/x.png") + final()
    pred = react.render_call(react.ToolCall(SEG, "image/qwertyui.png"))  # stops at Observation:
    s = score_sample(ref, pred)
    # The reference's closing "No" is cut (thoughts truncated to its one action).
    assert (s.sr_t, s.sr_act, s.sr_args, s.success, s.iou) == (1.0, 1.0, 1.0, True, 1.0)


def test_reference_png_needs_png_in_prediction():
    s = score_sample(call(SEG, IMG), call(SEG, "the image"))
    assert (s.sr_t, s.sr_act, s.sr_args, s.success) == (1.0, 1.0, 0.0, False)
    assert s.iou == pytest.approx(2 / 3)  # thought and action hit, args miss


def test_single_extra_trailing_no_is_ignored_but_two_are_not():
    ref = call(SEG, IMG)
    one = score_sample(ref, call(SEG, IMG, "ok") + final())
    assert one.sr_t == 1.0 and one.success
    two = score_sample(ref, call(SEG, IMG, "ok") + final() + "\n" + final())
    assert two.sr_t == pytest.approx(1 / 3) and not two.success  # Yes, No, No against Yes


def test_missing_step_halves_the_scores():
    ref = call("Edge Detection On Image", IMG, "ok") + call("Generate Image Condition On Canny Image", f"{IMG}, a cat")
    s = score_sample(ref, call("Edge Detection On Image", "image/zzzz.png"))
    assert (s.sr_t, s.sr_act, s.sr_args, s.success) == (0.5, 0.5, 0.5, False)
    assert s.iou == pytest.approx(3 / 6)  # 3 hits over 6 reference slots


def test_extra_step_counts_zero_but_not_in_iou():
    ref = call(SEG, IMG)
    s = score_sample(ref, call(SEG, IMG, "ok") + call(DETECT, f"{IMG}, cat"))
    assert (s.sr_t, s.sr_act, s.sr_args, s.success) == (0.5, 0.5, 0.5, False)
    assert s.iou == 1.0  # extra steps are outside both the hits and the reference mask


def test_wrong_tool_and_different_arg_counts():
    s = score_sample(call(DETECT, f"{IMG}, cat"), call(SEG, IMG))
    assert (s.sr_t, s.sr_act, s.sr_args, s.success) == (1.0, 0.0, 0.0, False)
    assert s.iou == pytest.approx(1 / 3)


def test_bleu_partial_credit_decides_success():
    ok = score_sample(call(DETECT, f"{IMG}, red apple"), call(DETECT, f"{IMG}, apple"))
    assert ok.sr_args == pytest.approx((1 + math.exp(-1)) / 2, rel=1e-6) and ok.success  # 0.684 >= 0.5
    text_tool = "Generate Image From User Input Text"
    bad = score_sample(call(text_tool, "a red apple on a table"), call(text_tool, "a dog"))
    # 1 of 2 words right ("a"), 2 words against 6: 0.5 * exp(1 - 6/2).
    assert bad.sr_args == pytest.approx(0.5 * math.exp(-2), rel=1e-6)
    assert (bad.sr_t, bad.sr_act, bad.success) == (1.0, 1.0, False)


def test_empty_prediction_for_tool_reference():
    s = score_sample(call(SEG, IMG), "")
    assert s == SampleScore(0.0, 0.0, 0.0, False, 0.0, True)


# -- no-tool references --------------------------------------------------------------------
NO_TOOL_REF = final("Paris is the capital of France.")


def test_no_tool_answered_correctly():
    s = score_sample(NO_TOOL_REF, final("It is Paris."))
    assert s == SampleScore(1.0, 1.0, 1.0, True, 1.0, False)


def test_no_tool_without_ai_line_fails_but_keeps_iou():
    s = score_sample(NO_TOOL_REF, f"{react.THOUGHT} No\nParis.")
    assert (s.sr_t, s.sr_act, s.sr_args, s.success) == (0.0, 0.0, 0.0, False)
    assert s.iou == 1.0  # the original computes IoU before the "AI: " check


def test_no_tool_with_empty_ai_line_fails():
    # The prediction is stripped as in the original: "AI: " at the very end is not an answer.
    assert not score_sample(NO_TOOL_REF, f"{react.THOUGHT} No\nAI: ").success


def test_no_tool_answered_with_a_tool():
    s = score_sample(NO_TOOL_REF, call(SEG, IMG))
    assert s == SampleScore(0.0, 0.0, 0.0, False, 0.0, False)


def test_no_tool_with_extra_no_scores_half_thought():
    # Code behaviour, not REFERENCE §6's summary: the second thought is an unmatched step.
    s = score_sample(NO_TOOL_REF, final("Paris.") + "\n" + final("Anything else?"))
    assert s.sr_t == 0.5 and not s.success and (s.sr_act, s.sr_args) == (0.0, 0.0)
    assert s.iou == 1.0  # the extra thought is outside both the hits and the reference mask


def test_empty_prediction_for_no_tool_reference():
    assert score_sample(NO_TOOL_REF, "") == SampleScore(0.0, 0.0, 0.0, False, 0.0, False)


# -- aggregation ---------------------------------------------------------------------------
def test_reference_tool_key():
    assert reference_tool(call(DETECT, f"{IMG}, cat") + final()) == DETECT
    assert reference_tool(NO_TOOL_REF) == NO_TOOL


def test_summarize_overall_and_per_tool():
    good = SampleScore(1.0, 1.0, 1.0, True, 1.0, True)
    bad = SampleScore(0.0, 0.5, 0.25, False, 0.5, True)
    none = SampleScore(1.0, 1.0, 1.0, True, 1.0, False)
    out = summarize([good, bad, none], [SEG, SEG, NO_TOOL])
    assert out["n"] == 3 and out["SR"] == pytest.approx(2 / 3)
    assert out["SR_act"] == pytest.approx(2.5 / 3) and out["SR_args"] == pytest.approx(2.25 / 3)
    assert out["IoU"] == pytest.approx(2.5 / 3)
    assert list(out["per_tool"]) == [SEG, NO_TOOL]
    seg = out["per_tool"][SEG]
    assert (seg["n"], seg["SR"], seg["SR_t"], seg["SR_args"]) == (2, 0.5, 0.5, 0.625)
    assert out["per_tool"][NO_TOOL]["SR"] == 1.0


def test_summarize_empty_and_mismatched():
    empty = summarize([], [])
    assert empty["n"] == 0 and empty["SR"] is None and empty["per_tool"] == {}
    with pytest.raises(ValueError):
        summarize([SampleScore(1, 1, 1, True, 1, True)], [])
