"""data/conversations.jsonl (the end-to-end conversation set, issue 18): schema, coverage, no near-duplicates.

Fast (a few seconds): parses the set, checks every turn against the tool catalog and the uploads so
far, checks the coverage minimums the issue asks for, and checks that no user message is a near-duplicate
(ROUGE-L F >= 0.7) of a human request in data/train.jsonl. See data/conversations.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from tools import CATALOG

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = ROOT / "data" / "conversations.jsonl"
TRAIN = ROOT / "data" / "train.jsonl"
ASSETS = ROOT / "assets"

CATEGORIES = {"single-tool", "multi-image", "follow-up", "chain", "chit-chat", "unavailable", "bad-request"}
# The tools that run offline here (no hub weights): the only ones a turn may expect.
OFFLINE = {
    "Get Photo Description", "Answer Question About The Image", "Detect the Give Object", "Segment the Image",
    "Segment the given object", "Remove Something From The Photo", "Edge Detection On Image",
    "Line Detection On Image", "Hed Detection On Image", "Sketch Detection On Image", "Pose Detection On Image",
    "Text Detection On Image", "Detection", "Detect Face", "Recognize Face", "Assess the Image Quality",
    "Image Super-Resolution", "Crop the Given Object",
}
SPECS = {c.spec.name: c.spec for c in CATALOG}
TURN_KEYS = {"user", "uploads", "expect"}
EXPECT_KEYS = {"tools", "image", "args", "result_image", "answer", "unavailable"}
IMAGE_REF = re.compile(r"^(upload:last|upload:(\d+)|result:last)$")
SIGN = re.compile(r"^make:sign:[A-Za-z0-9 .,$!?'&:/-]{1,40}$")

ROUGE_THRESHOLD = 0.7

# Coverage minimums (issue 18 and the brief that wrote the set).
MIN_CONVERSATIONS, MIN_TURNS = 64, 160
MIN_PER_TOOL = 4          # turns whose first acceptable tool is this offline tool
MIN_SPECIFIC_UPLOAD = 10  # turns naming one of 2-3 uploads ("upload:N" with >= 2 uploads so far)
MIN_NO_TOOL_CHAT = 12     # chit-chat / general questions: no tool, not unavailable, not a bad request
MIN_UNAVAILABLE = 10
MIN_BAD_REQUEST = 6       # no-tool turns in bad-request conversations (no image yet, unknown name)
MIN_ON_RESULT = 10        # follow-ups on a tool's result ("result:last")


@lru_cache(maxsize=1)
def conversations() -> list[dict]:
    rows = []
    for n, line in enumerate(CONVERSATIONS.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"line {n} is blank"
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:  # pragma: no cover - reported as a failure
            pytest.fail(f"line {n} is not JSON: {e}")
    return rows


def turns():
    """(conversation, turn index, turn, uploads so far including this turn, results so far before this turn)."""
    for conv in conversations():
        uploads = 0
        results = 0
        for i, turn in enumerate(conv["turns"]):
            uploads += len(turn["uploads"])
            yield conv, i, turn, uploads, results
            if turn["expect"]["result_image"]:
                results += 1


def test_every_line_follows_the_schema():
    ids = [c.get("id") for c in conversations()]
    assert len(ids) == len(set(ids)), "duplicate conversation ids"
    for conv in conversations():
        cid = conv.get("id")
        assert set(conv) == {"id", "category", "turns"}, f"{cid}: keys {sorted(conv)}"
        assert re.fullmatch(r"c\d{3}", cid), cid
        assert conv["category"] in CATEGORIES, f"{cid}: category {conv['category']!r}"
        assert isinstance(conv["turns"], list) and 1 <= len(conv["turns"]) <= 4, f"{cid}: 1-4 turns"
    for conv, i, turn, _uploads, _results in turns():
        where = f"{conv['id']} turn {i}"
        assert set(turn) == TURN_KEYS, f"{where}: keys {sorted(turn)}"
        assert isinstance(turn["user"], str) and turn["user"].strip(), f"{where}: empty user message"
        assert isinstance(turn["uploads"], list) and len(turn["uploads"]) <= 2, f"{where}: uploads"
        e = turn["expect"]
        assert set(e) == EXPECT_KEYS, f"{where}: expect keys {sorted(e)}"
        assert isinstance(e["tools"], list) and len(set(e["tools"])) == len(e["tools"]), where
        for key in ("args", "answer"):
            assert isinstance(e[key], list) and all(isinstance(k, str) and k.strip() for k in e[key]), (where, key)
        assert isinstance(e["result_image"], bool) and isinstance(e["unavailable"], bool), where


def test_tools_exist_and_are_offline():
    for conv, i, turn, _u, _r in turns():
        where = f"{conv['id']} turn {i}"
        e = turn["expect"]
        for name in e["tools"]:
            assert name in SPECS, f"{where}: {name!r} is not in the tool catalog"
            assert name in OFFLINE, f"{where}: {name!r} needs weights that are not available offline"
        if e["unavailable"]:
            assert e["tools"] == [], f"{where}: an unavailable request expects no tool"
        if not e["tools"]:
            assert e["image"] is None and not e["result_image"] and not e["args"], where
            continue
        specs = [SPECS[n] for n in e["tools"]]
        # result_image: only when every acceptable first tool makes an image (a text tool cannot satisfy it);
        # an image tool may expect none where it finds nothing (no face on a cat, nothing left after a removal)
        if e["result_image"]:
            assert all(s.output == "image" for s in specs), f"{where}: result_image with a text tool"
        if e["args"]:
            assert any(len(s.args) > 1 for s in specs), f"{where}: args given but no tool takes a text argument"
    assert OFFLINE <= set(SPECS)


def test_image_refs_are_valid_for_the_uploads_so_far():
    for conv, i, turn, uploads, results in turns():
        where = f"{conv['id']} turn {i}"
        ref = turn["expect"]["image"]
        if turn["expect"]["tools"]:
            assert all(SPECS[n].needs_image for n in turn["expect"]["tools"])
            assert ref is not None, f"{where}: every offline tool takes an image"
        if ref is None:
            continue
        m = IMAGE_REF.match(ref)
        assert m, f"{where}: bad image ref {ref!r}"
        if ref == "upload:last":
            assert uploads >= 1, f"{where}: upload:last before any upload"
        elif ref == "result:last":
            assert results >= 1, f"{where}: result:last before any tool made an image"
        else:
            assert int(m.group(2)) < uploads, f"{where}: {ref} but only {uploads} uploads so far"


def test_uploads_exist():
    for conv, i, turn, _u, _r in turns():
        for up in turn["uploads"]:
            if up.startswith("make:"):
                assert SIGN.match(up), f"{conv['id']} turn {i}: bad generated image {up!r}"
            else:
                assert (ASSETS / up).is_file(), f"{conv['id']} turn {i}: assets/{up} missing"


def coverage() -> dict:
    cats, primary = Counter(), Counter()
    specific = no_tool_chat = unavailable = bad_request = on_result = two_uploads = 0
    for conv, _i, turn, uploads, _r in turns():
        e = turn["expect"]
        if e["tools"]:
            primary[e["tools"][0]] += 1
        ref = e["image"] or ""
        if re.fullmatch(r"upload:\d+", ref) and uploads >= 2:
            specific += 1
        if ref == "result:last":
            on_result += 1
        if not e["tools"] and not e["unavailable"]:
            if conv["category"] == "bad-request":
                bad_request += 1
            else:
                no_tool_chat += 1
        unavailable += e["unavailable"]
        two_uploads += len(turn["uploads"]) == 2
    for conv in conversations():
        cats[conv["category"]] += 1
    return {"categories": cats, "primary": primary, "specific": specific, "no_tool_chat": no_tool_chat,
            "unavailable": unavailable, "bad_request": bad_request, "on_result": on_result,
            "two_uploads": two_uploads}


def test_coverage_minimums():
    cov = coverage()
    n_turns = sum(len(c["turns"]) for c in conversations())
    assert len(conversations()) >= MIN_CONVERSATIONS and n_turns >= MIN_TURNS, (len(conversations()), n_turns)
    assert set(cov["categories"]) == CATEGORIES, cov["categories"]
    short = {t: cov["primary"][t] for t in OFFLINE if cov["primary"][t] < MIN_PER_TOOL}
    assert not short, f"tools expected first in fewer than {MIN_PER_TOOL} turns: {short}"
    assert cov["specific"] >= MIN_SPECIFIC_UPLOAD, cov
    assert cov["no_tool_chat"] >= MIN_NO_TOOL_CHAT, cov
    assert cov["unavailable"] >= MIN_UNAVAILABLE, cov
    assert cov["bad_request"] >= MIN_BAD_REQUEST, cov
    assert cov["on_result"] >= MIN_ON_RESULT, cov
    assert cov["two_uploads"] >= 3, cov
    lengths = Counter(len(c["turns"]) for c in conversations())
    assert sum(v for k, v in lengths.items() if 2 <= k <= 4) > len(conversations()) / 2, lengths
    # chains: at least 5 conversations where a tool works on the result of an earlier tool
    chains = [c for c in conversations() if c["category"] == "chain"
              and any(t["expect"]["image"] == "result:last" for t in c["turns"])]
    assert len(chains) >= 5


# -- near-duplicates of training requests ------------------------------------------------------
def training_requests() -> list[str]:
    """The human request of every training record: after the last 'New input: ' up to the newline."""
    requests = set()
    with TRAIN.open(encoding="utf-8") as f:
        for line in f:
            instruction = json.loads(line)["instruction"]
            if "New input: " in instruction:
                request = instruction.rsplit("New input: ", 1)[1].split("\n", 1)[0].strip()
                if request:
                    requests.add(request)
    return sorted(requests)


def max_rouge(messages: list[str], requests: list[str]) -> tuple[float, str, str]:
    """Highest ROUGE-L F of any message against any request, with the pair.

    ROUGE-L F = 2 * LCS / (m + n) <= 2 * |shared tokens (multiset)| / (m + n), so pairs whose bound is
    below the best score so far (or the threshold's neighbourhood) are skipped without losing any.
    """
    from rouge_score import rouge_scorer, tokenize

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    req_tokens = [Counter(tokenize.tokenize(r, None)) for r in requests]
    req_len = [sum(c.values()) for c in req_tokens]
    index: dict[str, list[int]] = {}
    for j, toks in enumerate(req_tokens):
        for tok in toks:
            index.setdefault(tok, []).append(j)
    best = (0.0, "", "")
    floor = ROUGE_THRESHOLD / 2  # report the true max when it is interesting; skip hopeless pairs
    for msg in messages:
        toks = Counter(tokenize.tokenize(msg, None))
        m = sum(toks.values())
        if not m:
            continue
        candidates = {j for tok in toks for j in index.get(tok, ())}
        for j in candidates:
            shared = sum((toks & req_tokens[j]).values())
            if 2 * shared / (m + req_len[j]) < max(best[0], floor):
                continue
            f = scorer.score(requests[j], msg)["rougeL"].fmeasure
            if f > best[0]:
                best = (f, msg, requests[j])
    return best


def test_no_message_is_a_near_duplicate_of_a_training_request():
    requests = training_requests()
    assert len(requests) > 100, "data/train.jsonl has too few requests to compare against"
    messages = [t["user"] for c in conversations() for t in c["turns"]]
    score, msg, req = max_rouge(messages, requests)
    assert score < ROUGE_THRESHOLD, f"ROUGE-L {score:.2f}: {msg!r} is a near-duplicate of training request {req!r}"


def test_rouge_prefilter_loses_nothing():
    """The bound-based prefilter finds the same maximum as scoring every pair (on a small sample)."""
    from rouge_score import rouge_scorer

    requests = training_requests()[:150]
    messages = [t["user"] for c in conversations()[:20] for t in c["turns"]] + [requests[3], requests[7] + " pls"]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    brute = max(scorer.score(r, m)["rougeL"].fmeasure for r in requests for m in messages)
    assert max_rouge(messages, requests)[0] == pytest.approx(brute)
    assert brute == pytest.approx(1.0)  # the planted copy is found
