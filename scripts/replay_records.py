"""Replayed training records for a training mix (scripts/continue_default.sh, scripts/retrain_default.sh):
whole episodes of data/train.jsonl in a seeded order until REPLAY records, then NEGATIVES more records
of kind "negative" (general requests answered without a tool) not already taken.

With PER_TOOL, an episode is taken only while a tool it calls has fewer than PER_TOOL calls in the
replay (REPLAY stays the cap): every tool gets its share, where the plain order left the
generation tools with 4-10 calls each in a 430-720 record replay (docs/benchmark.md, "The default's
data from scratch").

    python scripts/replay_records.py REPLAY NEGATIVES SEED OUT [PER_TOOL]
"""

import json
import os
import random
import sys
from collections import Counter


def main(want: int, negatives: int, seed: int, out_path: str, per_tool: int = 0) -> None:
    rows = [json.loads(line) for line in open("data/train.jsonl", encoding="utf-8")]
    episodes = {}
    for r in rows:
        episodes.setdefault(r["episode"], []).append(r)
    order = sorted(episodes)
    random.Random(seed).shuffle(order)
    out, calls = [], Counter()
    for e in order:
        if len(out) >= want:
            break
        tools = [r["tool"] for r in episodes[e] if r.get("tool")]
        if per_tool and not any(calls[t] < per_tool for t in tools):
            continue
        calls.update(tools)
        out += episodes[e]
    taken = {id(r) for r in out}
    spare = [r for r in rows if r.get("kind") == "negative" and id(r) not in taken]
    random.Random(seed + 1).shuffle(spare)
    out += spare[:negatives]
    with open(out_path + ".partial", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    os.replace(out_path + ".partial", out_path)  # a killed run leaves no half file to be taken as done
    least = min(calls.values()) if calls else 0
    print(f"replay: {len(out)} records of {len(rows)} ({min(negatives, len(spare))} extra negatives), "
          f"{sum(calls.values())} calls of {len(calls)} tools (fewest {least})")


if __name__ == "__main__":
    per_tool = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], per_tool)
