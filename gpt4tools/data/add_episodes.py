"""One-off (issue 17): add `episode` and `turn` to data files built before records carried them.

    python -m gpt4tools.data.add_episodes data/train.jsonl data/val.jsonl data/test_unseen.jsonl \
        data/chat_eval.jsonl data/chat_eval_all.jsonl [--check]
    python -m gpt4tools.data.add_episodes --compare OLD.jsonl NEW.jsonl  # e.g. a rebuild against HEAD's file

Rebuilding the committed files with `data build` takes over an hour on 2 cores, so this
writes exactly what the builder now writes, without rebuilding. A record's id hashes what
`episode_id` needs (samples.record_id: seed, image, the asked tool, the user's words, the
variant, the turn), so each value is recovered and then checked by recomputing the record's
id: a record whose id cannot be reproduced stops the script. One-turn records (negatives,
chat) are their own episode. Every other byte of every record stays the same (the two
fields are appended). Then stats.json / stats.md get the new sizes and checksums.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from gpt4tools.data.instructions import IMAGE
from gpt4tools.data.output import stats_markdown
from gpt4tools.data.samples import episode_id, record_id
from gpt4tools.data.synthetic import rng_for
from gpt4tools.images import random_name
from gpt4tools.records import atomic_write, read_jsonl, to_jsonl

SEED = 0  # data/README.md: every committed file is built with seed 0
SPLITS = {"train.jsonl": "train", "val.jsonl": "val", "test_unseen.jsonl": "test"}
ONE_TURN = ("negative", "chat", "chat-negative")
MAX_TURNS = 4  # a chained tool call, its second call and the final answer


def _user_text(rec: dict) -> str:
    """The instruction's words as the teacher wrote them: the user message, the image renamed back."""
    image = f"image/{random_name(rng=rng_for('image', SEED, rec['source']))}.png"  # as samples.episode names it
    user = rec["instruction"].split("\n\nNew input: ", 1)[1].split("\n", 1)[0]
    return user.replace(image, IMAGE)


def episode_fields(rec: dict, split: str) -> tuple[str, int]:
    """(episode, turn) as RecordMaker writes them; ValueError when the record's id does not confirm them."""
    if rec["kind"] in ONE_TURN:
        return rec["id"], 0
    text = _user_text(rec)
    for asked in rec["tools_offered"]:
        for variant in ("single", "merged"):
            for turn in range(MAX_TURNS):
                extra = (split, asked, text, variant, turn)
                if record_id(SEED, rec["source"], rec["tool"], rec["kind"], *extra) == rec["id"]:
                    return episode_id(SEED, rec["source"], asked, split, text, variant), turn
    raise ValueError(f"record {rec['id']}: its id does not reproduce; was it built with seed {SEED}?")


def add_fields(path: Path) -> bytes:
    """The file's bytes with `episode` and `turn` appended to every record."""
    split = SPLITS.get(path.name, "chat")
    found = read_jsonl(path, allow_list=False)
    if found.bad:
        raise ValueError(f"{path}: malformed lines {[b.line for b in found.bad]}")
    out = []
    for rec in found.values():
        base = {k: v for k, v in rec.items() if k not in ("episode", "turn")}
        eid, turn = episode_fields(base, split)
        out.append({**base, "episode": eid, "turn": turn})
    return to_jsonl(out).encode("utf-8")


def compare(old: Path, new: Path) -> int:
    """How many of NEW's records differ from OLD's (same order) once `episode` and `turn` are removed."""
    old_lines = old.read_bytes().decode("utf-8").split("\n")
    new_lines = new.read_bytes().decode("utf-8").split("\n")
    if len(old_lines) != len(new_lines):
        print(f"{new}: {len(new_lines) - 1} records, {old}: {len(old_lines) - 1}")
        return max(len(old_lines), len(new_lines)) - 1
    differ = 0
    for number, (a, b) in enumerate(zip(old_lines, new_lines), start=1):
        if not b:
            differ += a != b
            continue
        rec = json.loads(b)
        stripped = {k: v for k, v in rec.items() if k not in ("episode", "turn")}
        if "episode" not in rec or "turn" not in rec or json.dumps(stripped, ensure_ascii=False) != a:
            differ += 1
            if differ <= 5:
                print(f"{new}:{number} differs from {old}:{number}")
    print(f"{new}: {sum(1 for b in new_lines if b)} records; {differ} differ from {old} apart from episode/turn")
    return differ


def update_stats(folder: Path, written: dict[str, bytes]) -> None:
    stats_path = folder / "stats.json"
    all_stats = json.loads(stats_path.read_text(encoding="utf-8"))
    for st in all_stats.values():
        if st.get("file") in written:
            data = written[st["file"]]
            st.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    atomic_write(stats_path, (json.dumps(all_stats, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic_write(folder / "stats.md", stats_markdown(all_stats).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools.data.add_episodes", description=__doc__.split("\n")[0])
    ap.add_argument("files", type=Path, nargs="*")
    ap.add_argument("--check", action="store_true", help="only report; write nothing")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"),
                    help="check that NEW's records are OLD's byte for byte, but for episode and turn")
    args = ap.parse_args(argv)
    if args.compare:
        return 1 if compare(*args.compare) else 0
    written = {}
    for path in args.files:
        data = add_fields(path)
        n = data.count(b"\n")
        print(f"{path}: {n} records, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
        if not args.check:
            atomic_write(path, data)
        written[path.name] = data
    folders = {p.parent for p in args.files}
    if not args.check:
        for folder in folders:
            if (folder / "stats.json").is_file():
                update_stats(folder, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
