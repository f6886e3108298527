"""The paper's benchmark scorer (REFERENCE.md §6). Pure: text in, numbers out.

Fields are read with `react.fields` (the paper's regexes, values stripped). Where §6
leaves details open, the original `eval/evaluate_result.py` is the ground truth, and
this module reproduces it rule for rule:

- A reference "uses tools" when it contains both "Action:" and "Action Input:".
- Step lists are compared position by position over max(len(ref), len(pred)) steps;
  missing and extra steps score 0.
- SR_act: tool names equal. SR_args: both inputs split on "," (no strip); different
  part counts score 0; a reference part containing ".png" needs a prediction part with
  ".png" (else the whole step scores 0; the file name itself is not compared); other
  parts score BLEU-1 as pycocoevalcap's `Bleu(n=1)` computes it for one pair (see
  `bleu1`). The step scores the mean of its parts.
- SR_t: reference thoughts are cut to the number of reference actions (the closing
  "No" of a tool chain is not scored); a prediction's single extra trailing "No" is
  dropped.
- Success: SR_t == 1, SR_act == 1 and SR_args >= 0.5.
- IoU: the thought, action and argument flag vectors concatenated, against their
  reference masks: sum(flag * mask) / max(sum(max(flag, mask)), 1).
- No-tool reference: SR_t compares the thought lists, then is set to 0 unless the first
  predicted thought is "No" and the prediction has an `AI: ` line. SR_act, SR_args and
  success are all 1 if SR_t == 1, else all 0.

Where the code differs from §6's one-line summary, we follow the code:

- A no-tool reference answered "No" and then another "No" scores SR_t 0.5 (the extra
  thought is a step the reference lacks), so it is not a success, although §6 reads as
  if the first thought and an `AI: ` line were enough.
- A no-tool sample's IoU comes from the thought flags *before* the "No"/"AI: " checks:
  a lone "No" without an `AI: ` line fails but has IoU 1.
- BLEU's smoothing constants make an exact text match score 1 - ~1e-9, not exactly 1;
  this is how pycocoevalcap computes it, and no threshold is near 1.

The prediction is stripped before parsing, as the original did: a trailing "AI: " with
nothing after it is not an answer. A malformed reference whose vectors are all empty
scores 0 (the original would produce NaN).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gpt4tools import react

NO_TOOL = "no tool"  # the per-tool key of references that need no tool

# pycocoevalcap's smoothing: `_TINY` keeps 0/0 at 0, `_SMALL` avoids a zero division.
_TINY = 1e-15
_SMALL = 1e-9


@dataclass(frozen=True)
class SampleScore:
    sr_t: float
    sr_act: float
    sr_args: float
    success: bool
    iou: float
    uses_tool: bool  # whether the reference uses a tool


def bleu1(hypothesis: str, reference: str) -> float:
    """BLEU-1 of one hypothesis against one reference, exactly as pycocoevalcap's Bleu(n=1).

    Whitespace tokens, case-sensitive; clipped unigram precision (correct + 1e-15) /
    (hyp_len + 1e-9), times exp(1 - 1/ratio) when ratio = (hyp_len + 1e-15) /
    (ref_len + 1e-9) is below 1. An empty hypothesis (or two empty strings) scores 0.
    """
    hyp, ref = hypothesis.split(), reference.split()
    ref_counts = Counter(ref)
    correct = sum(min(n, ref_counts[w]) for w, n in Counter(hyp).items())
    score = (correct + _TINY) / (len(hyp) + _SMALL)
    ratio = (len(hyp) + _TINY) / (len(ref) + _SMALL)
    if ratio < 1:  # brevity penalty; note that equal lengths also land here (by ~1e-9)
        score *= math.exp(1 - 1 / ratio)
    return score


def step_args_score(reference_input: str, predicted_input: str) -> float:
    """One step's argument score (see the module docstring)."""
    ref_parts, pred_parts = reference_input.split(","), predicted_input.split(",")
    if len(ref_parts) != len(pred_parts):
        return 0.0
    part_scores = []
    for ref, pred in zip(ref_parts, pred_parts):
        if ".png" in ref:
            if ".png" not in pred:
                return 0.0  # an image argument that is not an image name fails the step
            part_scores.append(1.0)
        else:
            part_scores.append(bleu1(pred, ref))
    return sum(part_scores) / len(part_scores)


def _flags(ref: Sequence[str], pred: Sequence[str]) -> tuple[list[float], list[float]]:
    """(match flags, reference mask), both of length max(len): position-wise equality."""
    size = max(len(ref), len(pred))
    flag = [float(r == p) for r, p in zip(ref, pred)] + [0.0] * (size - min(len(ref), len(pred)))
    return flag, _mask(len(ref), size)


def _args_flags(ref: Sequence[str], pred: Sequence[str]) -> tuple[list[float], list[float]]:
    size = max(len(ref), len(pred))
    flag = [step_args_score(r, p) for r, p in zip(ref, pred)] + [0.0] * (size - min(len(ref), len(pred)))
    return flag, _mask(len(ref), size)


def _mask(n_ref: int, size: int) -> list[float]:
    return [1.0] * n_ref + [0.0] * (size - n_ref)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0  # empty: a malformed reference


def _iou(flag: Sequence[float], mask: Sequence[float]) -> float:
    intersection = sum(f * m for f, m in zip(flag, mask))
    union = max(sum(max(f, m) for f, m in zip(flag, mask)), 1.0)
    return intersection / union


def score_sample(reference: str, prediction: str) -> SampleScore:
    """Score one prediction (the model's continuation) against its reference output."""
    ref = react.fields(reference)
    pred = react.fields((prediction or "").strip())
    if react.reference_uses_tool(reference):
        return _score_tool(ref, pred)
    return _score_no_tool(ref, pred)


def _score_tool(ref: react.Fields, pred: react.Fields) -> SampleScore:
    act, act_mask = _flags(ref.actions, pred.actions)
    args, args_mask = _args_flags(ref.inputs, pred.inputs)
    pred_thoughts = list(pred.thoughts)
    # A chain's closing "No" is allowed: it does not change which tools were run.
    if len(pred_thoughts) == len(pred.actions) + 1 and pred_thoughts[-1] == "No":
        pred_thoughts.pop()
    thought, thought_mask = _flags(ref.thoughts[: len(ref.actions)], pred_thoughts)
    sr_t, sr_act, sr_args = _mean(thought), _mean(act), _mean(args)
    return SampleScore(
        sr_t=sr_t,
        sr_act=sr_act,
        sr_args=sr_args,
        success=sr_t >= 1.0 and sr_act >= 1.0 and sr_args >= 0.5,
        iou=_iou(thought + act + args, thought_mask + act_mask + args_mask),
        uses_tool=True,
    )


def _score_no_tool(ref: react.Fields, pred: react.Fields) -> SampleScore:
    thought, thought_mask = _flags(ref.thoughts, pred.thoughts)
    sr_t = _mean(thought)
    if not pred.thoughts or pred.thoughts[0] != "No" or not pred.has_ai:
        sr_t = 0.0
    ok = 1.0 if sr_t >= 1.0 else 0.0
    # IoU from the flags before the checks above, as the original did.
    iou = _iou(thought, thought_mask)
    return SampleScore(sr_t=sr_t, sr_act=ok, sr_args=ok, success=bool(ok), iou=iou, uses_tool=False)


def reference_tool(reference: str) -> str:
    """The per-tool key of a reference: its first action, or NO_TOOL."""
    if not react.reference_uses_tool(reference):
        return NO_TOOL
    actions = react.fields(reference).actions
    return actions[0] if actions else NO_TOOL


# The paper's metrics in the order every table shows them (reports, the app, model cards),
# each the mean of one SampleScore field.
METRICS: dict[str, str] = {"SR_t": "sr_t", "SR_act": "sr_act", "SR_args": "sr_args", "SR": "success", "IoU": "iou"}


def _aggregate(scores: Sequence[SampleScore]) -> dict:
    n = len(scores)
    if not n:  # nothing to average: say so rather than print a made-up 0
        return {**dict.fromkeys(METRICS), "n": 0}
    return {**{name: sum(getattr(s, field) for s in scores) / n for name, field in METRICS.items()}, "n": n}


def summarize(scores: Sequence[SampleScore], tools: Sequence[str]) -> dict:
    """Means over samples, overall and per tool, as fractions in [0, 1].

    Args:
        scores: one SampleScore per scored sample.
        tools: the per-tool key of each sample, in the same order (`reference_tool`).

    Returns:
        {"SR_t", "SR_act", "SR_args", "SR", "IoU", "n", "per_tool"}; per_tool maps each
        key (sorted, NO_TOOL last) to the same metrics over its samples. With no
        samples the metrics are None.
    """
    if len(scores) != len(tools):
        raise ValueError(f"{len(scores)} scores but {len(tools)} tool keys")
    groups: dict[str, list[SampleScore]] = {}
    for score, tool in zip(scores, tools):
        groups.setdefault(tool, []).append(score)
    order = sorted(groups, key=lambda t: (t == NO_TOOL, t))
    return {**_aggregate(scores), "per_tool": {t: _aggregate(groups[t]) for t in order}}
