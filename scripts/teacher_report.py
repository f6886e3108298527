"""How well do local LLMs teach? Yield, throughput and diversity of the self-instruct teachers.

Every teacher gets the same (image, tool) pairs: the seen tools over the first N synthetic images of
the training stream (the contents `data build` draws first). Teachers: the template teacher (the
reference), and for each model the LLM teacher ("write": a request from the image content) and the
paraphrasing route ("paraphrase": the template teacher's request rewritten). Reported per teacher:

- yield: instructions kept / (image, tool) pairs asked, the requests sent (retries in another style
  included) and every drop reason;
- throughput: seconds per request and kept instructions per minute on this machine; a rerun takes
  its replies from the cache and adds the requests and time it still needs to the earlier run's
  (delete OUT/replies.jsonl to time from scratch);
- diversity: distinct 1- and 2-grams of the requests (share of n-grams that are distinct) and the
  mean ROUGE-L F1 of each request to the nearest template phrasing of its tool, slots filled with
  the request's own arguments (1.0: the template teacher's wording).

    python scripts/teacher_report.py --contents 4 --models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b \
        --out docs/results/teacher

Writes OUT/report.json, OUT/report.md and OUT/instructions-<teacher>.jsonl (every kept instruction,
for reading). Replies are cached in OUT/replies.jsonl, so the same command gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import cpu_model  # noqa: E402  scripts/benchlib.py (this folder is on sys.path)

from gpt4tools.data.filters import ToolFit  # noqa: E402
from gpt4tools.data.instructions import IMAGE, Instruction, TemplateTeacher, phrasings, supports  # noqa: E402
from gpt4tools.data.synthetic import synthetic_content  # noqa: E402
from gpt4tools.data.teacher import LLMTeacher, Paraphraser, ReplyCache  # noqa: E402
from gpt4tools.records import atomic_write, to_jsonl  # noqa: E402

_WORDS = re.compile(r"[a-z0-9']+|[?!.,]")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(w[i:i + n]) for w in map(words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def template_phrasings(ins: Instruction) -> list[str]:
    """The template teacher's phrasings of this tool, slots filled from the instruction's arguments."""
    entry = phrasings().get(ins.tool)
    if not entry:
        return []
    text_args = [a for a in ins.args if a != IMAGE]
    slots = {"image": IMAGE, "object": text_args[0] if text_args else "", "scene_lc": "",
             "new_object": text_args[1] if len(text_args) > 1 else "", "edit_cap": "", "question_lc": ""}
    for key in ("prompt", "edit", "question"):
        slots[key] = text_args[-1] if text_args else ""
    out = []
    for p in entry["phrasings"]:
        try:
            out.append(p.format(**slots))
        except (KeyError, IndexError):
            continue
    return out


def nearest_template(found: list[Instruction]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [max((scorer.score(p, i.text)["rougeL"].fmeasure for p in template_phrasings(i)), default=0.0)
            for i in found]
    return sum(best) / len(best) if best else 0.0


def summary(name: str, found: list[Instruction], pairs: int, requests: int, seconds: float,
            dropped: Counter, earlier: dict | None) -> dict:
    if earlier:  # replies cached by an earlier run: what the data cost is that run's requests and ours
        requests, seconds = requests + earlier["requests"], seconds + earlier["seconds"]
    texts = [i.text for i in found]
    return {"teacher": name, "pairs": pairs, "kept": len(found), "yield": round(len(found) / max(pairs, 1), 3),
            "requests": requests, "seconds": round(seconds, 1),
            "seconds_per_request": round(seconds / requests, 2) if requests else None,
            "kept_per_minute": round(60 * len(found) / seconds, 1) if seconds and requests else None,
            "distinct_1": round(distinct(texts, 1), 3), "distinct_2": round(distinct(texts, 2), 3),
            "rouge_l_to_template": round(nearest_template(found), 3),
            "mean_words": round(sum(len(t.split()) for t in texts) / max(len(texts), 1), 1),
            "dropped": dict(dropped.most_common())}


def common_pairs(kept: dict[str, list[Instruction]]) -> dict[str, dict]:
    """Diversity on the (image, tool) pairs every teacher kept: distinct n-gram shares fall as a set
    grows, so teachers that kept different numbers are compared on the same pairs."""
    keys = [{(i.content_id, i.tool) for i in found} for found in kept.values()]
    shared = set.intersection(*keys) if keys else set()
    out = {}
    for name, found in kept.items():
        texts = [i.text for i in found if (i.content_id, i.tool) in shared]
        out[name] = {"pairs": len(texts), "distinct_1": round(distinct(texts, 1), 3),
                     "distinct_2": round(distinct(texts, 2), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contents", type=int, default=4, help="synthetic training images (each: every seen tool)")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b",
                    help="teacher models (manifest names or GGUF files), llama.cpp backend")
    ap.add_argument("--routes", default="write,paraphrase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("docs/results/teacher"))
    args = ap.parse_args(argv)

    from gpt4tools.llm import load_llm
    from gpt4tools.registry import build_registry

    registry = build_registry(None)
    specs = [s for s in sorted(registry.specs(), key=lambda s: s.name) if s.seen]
    contents = [synthetic_content(args.seed, "train", n) for n in range(args.contents)]
    pairs = [(c, s) for c in contents for s in specs if supports(c, s)]
    args.out.mkdir(parents=True, exist_ok=True)
    cache = ReplyCache(args.out / "replies.jsonl")
    fit = ToolFit(registry.specs())

    earlier = {}
    if (args.out / "report.json").is_file() and (args.out / "replies.jsonl").is_file():
        earlier = {t["teacher"]: t for t in json.loads((args.out / "report.json").read_text())["teachers"]}
    template = TemplateTeacher(args.seed)
    reference = [i for i in (template.instruction(c, s) for c, s in pairs) if i is not None]
    results = [summary("template", reference, len(pairs), 0, 0.0, Counter(), None)]
    kept = {"template": reference}
    for model in filter(None, args.models.split(",")):
        llm = load_llm(model, adapter="none", backend="llamacpp")
        for route in filter(None, args.routes.split(",")):
            dropped: Counter = Counter()
            cls = LLMTeacher if route == "write" else Paraphraser
            teacher = cls(llm, registry, cache, retries=args.retries, seed=args.seed, fit=fit)
            t0 = time.perf_counter()
            if route == "write":
                found = [i for i in (teacher.instruction(c, s, dropped) for c, s in pairs) if i is not None]
            else:
                found = teacher.run_on(reference, dropped)
            name = f"{llm.name}/{route}"
            results.append(summary(name, found, len(pairs), teacher.asked, time.perf_counter() - t0, dropped,
                                   earlier.get(name)))
            kept[name] = found
            print(json.dumps(results[-1]), flush=True)
        del llm

    report = {"command": "python scripts/teacher_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores",
              "contents": args.contents, "pairs": len(pairs), "teachers": results,
              "common_pairs": common_pairs(kept)}
    atomic_write(args.out / "report.json", (json.dumps(report, indent=1) + "\n").encode())
    for name, found in kept.items():
        atomic_write(args.out / f"instructions-{name.replace('/', '-')}.jsonl",
                     to_jsonl([i.to_json() for i in found]).encode())
    rows = ["| teacher | kept / pairs | requests | s / request | kept / min | distinct-1 | distinct-2 | "
            "ROUGE-L to template | words |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r['teacher']} | {r['kept']} / {r['pairs']} | {r['requests']} | "
                    f"{r['seconds_per_request'] or '-'} | {r['kept_per_minute'] or '-'} | {r['distinct_1']} | "
                    f"{r['distinct_2']} | {r['rouge_l_to_template']} | {r['mean_words']} |")
    common = report["common_pairs"]
    shared = next(iter(common.values()))["pairs"] if common else 0
    rows += ["", f"On the {shared} (image, tool) pairs every teacher kept:",
             "", "| teacher | distinct-1 | distinct-2 |", "|---|---:|---:|"]
    rows += [f"| {name} | {c['distinct_1']} | {c['distinct_2']} |" for name, c in common.items()]
    drops = [f"- {r['teacher']}: " + ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) for r in results
             if r["dropped"]]
    md = "\n".join([f"# Teacher report\n\n`{report['command']}` on {report['machine']}\n", *rows,
                    "\nDrop reasons:\n", *drops]) + "\n"
    atomic_write(args.out / "report.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
