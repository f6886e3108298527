"""Replayed training records for a training mix (scripts/continue_default.sh, scripts/retrain_default.sh):
whole episodes of data/train.jsonl in a seeded order until REPLAY records, then NEGATIVES more records
of kind "negative" (general requests answered without a tool) not already taken.

    python scripts/replay_records.py REPLAY NEGATIVES SEED OUT
"""

import json
import os
import random
import sys


def main(want: int, negatives: int, seed: int, out_path: str) -> None:
    rows = [json.loads(line) for line in open("data/train.jsonl", encoding="utf-8")]
    episodes = {}
    for r in rows:
        episodes.setdefault(r["episode"], []).append(r)
    order = sorted(episodes)
    random.Random(seed).shuffle(order)
    out = []
    for e in order:
        if len(out) >= want:
            break
        out += episodes[e]
    taken = {id(r) for r in out}
    spare = [r for r in rows if r.get("kind") == "negative" and id(r) not in taken]
    random.Random(seed + 1).shuffle(spare)
    out += spare[:negatives]
    with open(out_path + ".partial", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    os.replace(out_path + ".partial", out_path)  # a killed run leaves no half file to be taken as done
    print(f"replay: {len(out)} records of {len(rows)} ({min(negatives, len(spare))} extra negatives)")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
