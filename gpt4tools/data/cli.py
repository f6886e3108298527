"""python -m gpt4tools data build [...]: self-instruct training data (see gpt4tools/data/__init__.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gpt4tools.data.build import SPLITS, TEACHERS, BuildConfig, build
from gpt4tools.data.negatives import NegativeFilter
from gpt4tools.llm import NAMED_BACKENDS


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools data", description="Generate GPT4Tools training data.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build train + val (--split train), the unseen-tool test set (--split test) "
                                     "or the chat evaluation set (--split chat)")
    b.add_argument("--out", type=Path, default=BuildConfig.out, help="output folder (default: data)")
    b.add_argument("--split", choices=SPLITS, default=BuildConfig.split)
    b.add_argument("--seed", type=int, default=BuildConfig.seed)
    _size_args(b.add_argument_group("sizes"))
    _content_args(b.add_argument_group("image content"))
    _teacher_args(b.add_argument_group("teacher"))
    _filter_args(b.add_argument_group("negatives"), b.add_argument_group("filtering"))
    g = b.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="also write a JSON list next to each JSONL file")
    g.add_argument("--gzip", action="store_true", help="write <name>.jsonl.gz instead of <name>.jsonl")
    g.add_argument("--work", type=Path, help="work dir for caches and resumable partial files")
    g.add_argument("--quiet", action="store_true")
    return ap


def _size_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--train-records", type=int, default=BuildConfig.train_records)
    g.add_argument("--val-per-tool", type=int, default=BuildConfig.val_per_tool)
    g.add_argument("--val-finals", type=int, default=BuildConfig.val_finals)
    g.add_argument("--test-per-tool", type=int, default=BuildConfig.test_per_tool)
    g.add_argument("--negative-share", type=float, default=BuildConfig.negative_share,
                   help="share of training records with no tool")
    g.add_argument("--val-negatives", type=int, default=BuildConfig.val_negatives)
    g.add_argument("--test-negatives", type=int, default=BuildConfig.test_negatives)
    g.add_argument("--chat-per-tool", type=int, default=BuildConfig.chat_per_tool,
                   help="chat split: records per offered tool")
    g.add_argument("--chat-negatives", type=int, default=BuildConfig.chat_negatives, help="chat split: no-tool records")
    g.add_argument("--chat-offer", type=int, default=BuildConfig.chat_offer,
                   help="chat split: tools per prompt, the closest to the message as the agent offers them "
                        "(0: every available tool; written to chat_eval_all.jsonl)")
    g.add_argument("--merge-share", type=float, default=BuildConfig.merge_share,
                   help="episodes that continue an earlier exchange")
    g.add_argument("--many-tools-share", type=float, default=BuildConfig.many_tools_share,
                   help="training records that offer 6 to all seen tools instead of the paper's 2-5")
    g.add_argument("--retrieved-share", type=float, default=BuildConfig.retrieved_share,
                   help="training records that offer the 2-5 tools the agent would retrieve for the message")
    g.add_argument("--dialogue-share", type=float, default=BuildConfig.dialogue_share,
                   help="training records that are conversation-shaped: several images, follow-ups on results, "
                        "repairs, failed calls, unavailable tools (gpt4tools/data/dialogues.py)")
    g.add_argument("--max-contents", type=int, default=BuildConfig.max_contents, help="bound on images drawn per split")
    g.add_argument("--patience", type=int, default=BuildConfig.patience,
                   help="stop a tool after this many duplicates in a row (LLM teachers: or images in a row "
                        "that gave nothing usable for it)")


def _content_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--photos", type=Path, action="append",
                   help="folder of photos to analyse (repeatable; default: assets/)")
    g.add_argument("--no-photos", action="store_true")
    g.add_argument("--no-synthetic", action="store_true", help="do not use synthetic COCO scenes")
    g.add_argument("--coco-captions", type=Path)
    g.add_argument("--coco-instances", type=Path)
    g.add_argument("--load", help="tools (registry --load syntax) that analyse photos; default all on cpu")


def _teacher_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--teacher", choices=TEACHERS, default=BuildConfig.teacher)
    g.add_argument("--backend", choices=NAMED_BACKENDS, default="openai")
    g.add_argument("--model", default="default", help="served model name (openai), manifest name, path or hub id")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    g.add_argument("--chat", action="store_true", help="use the chat endpoint (chat-only servers)")
    g.add_argument("--device", default="cpu")
    g.add_argument("--workers", type=int, default=BuildConfig.workers, help="concurrent teacher requests")
    g.add_argument("--retries", type=int, default=BuildConfig.retries,
                   help="extra requests per image when a reply is unusable")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (openai)")


def _filter_args(n: argparse._ArgumentGroup, g: argparse._ArgumentGroup) -> None:
    n.add_argument("--no-sharegpt", action="store_true")
    n.add_argument("--alpaca", type=Path, action="append", default=[],
                   help="Alpaca-format JSON/JSONL file (repeatable)")
    n.add_argument("--max-reply-chars", type=int, default=NegativeFilter.max_reply_chars)
    n.add_argument("--max-prompt-chars", type=int, default=NegativeFilter.max_prompt_chars)
    g.add_argument("--include-unseen", action="store_true", help="also train on the 8 unseen tools")
    g.add_argument("--dedupe-threshold", type=float, default=BuildConfig.dedupe_threshold,
                   help="ROUGE-L near-duplicate threshold")
    g.add_argument("--near-dup-keep", type=int, default=BuildConfig.near_dup_keep,
                   help="members of one near-duplicate cluster to keep")
    g.add_argument("--dedupe-scope", choices=("all", "image"), default="all",
                   help="compare instructions across the split (default) or only within one image")
    g.add_argument("--embeddings", action="store_true", help="also filter by all-MiniLM-L6-v2 cosine >= 0.9")
    g.add_argument("--cutoff", type=int, default=BuildConfig.cutoff, help="drop records longer than this many tokens")
    g.add_argument("--tokenizer", help="tokenizer dir for token counts (default: 3 characters per token)")


def _llm_factory(args: argparse.Namespace):
    def make():
        from gpt4tools.llm import load_llm

        if args.backend == "openai":
            return load_llm(args.model, backend="openai", base_url=args.base_url, chat=args.chat,
                            timeout=args.timeout, max_retries=0)
        # Name the teacher after the model (a manifest name, or the folder above a ".../hf" dir).
        path = Path(args.model)
        name = path.parent.name if path.name == "hf" else path.name
        if args.backend == "llamacpp":
            return load_llm(args.model, adapter="none", backend="llamacpp")
        return load_llm(args.model, adapter="none", backend=args.backend, device=args.device, name=name)

    return make


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    cfg = BuildConfig(
        out=args.out, split=args.split, seed=args.seed, train_records=args.train_records,
        val_per_tool=args.val_per_tool, val_finals=args.val_finals, test_per_tool=args.test_per_tool,
        negative_share=args.negative_share, val_negatives=args.val_negatives, test_negatives=args.test_negatives,
        chat_per_tool=args.chat_per_tool, chat_negatives=args.chat_negatives, chat_offer=args.chat_offer,
        merge_share=args.merge_share, many_tools_share=args.many_tools_share, retrieved_share=args.retrieved_share,
        dialogue_share=args.dialogue_share,
        max_contents=args.max_contents, patience=args.patience, synthetic=not args.no_synthetic,
        coco_captions=args.coco_captions, coco_instances=args.coco_instances, teacher=args.teacher,
        llm=_llm_factory(args) if args.teacher != "template" else None, workers=args.workers, retries=args.retries,
        sharegpt=not args.no_sharegpt, alpaca=args.alpaca,
        negative_filter=NegativeFilter(args.max_reply_chars, args.max_prompt_chars),
        include_unseen=args.include_unseen, dedupe_threshold=args.dedupe_threshold, near_dup_keep=args.near_dup_keep,
        dedupe_scope=args.dedupe_scope,
        embeddings=args.embeddings, cutoff=args.cutoff, tokenizer=args.tokenizer, json=args.json, gzip=args.gzip,
        work=args.work,
        echo=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.no_photos:
        cfg.photos = []
    elif args.photos:
        cfg.photos = args.photos
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gpt4tools.registry import UnknownToolError, build_registry

    try:
        registry = build_registry(args.load)
    except UnknownToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    if not args.quiet:
        print(f"work dir (caches, progress.jsonl): {cfg.work_dir()}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        results = build(cfg, registry)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - t0) / 60
    for split, st in results.items():
        print(f"{split}: {st['records']} records -> {cfg.out / st['file']} ({st['bytes']:,} bytes) "
              f"kinds {json.dumps(st['by_kind'])}")
    total = sum(st["records"] for st in results.values())
    print(f"{total} records in {minutes:.1f} min ({total / max(minutes, 1e-9):.0f} records/min); "
          f"stats: {cfg.out / 'stats.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
