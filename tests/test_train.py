"""LoRA training: masking, batching, a real few-step run (tiny model), resume, bad data."""

import json

import pytest
import torch

from gpt4tools import react, records
from gpt4tools.train import (
    IGNORE,
    TrainConfig,
    collate,
    group_turns,
    parser,
    read_records,
    tokenize_record,
    tokenize_turns,
    train,
)


def make_tiny_model(d):
    """A 2-layer Llama with a word-level tokenizer trained here: plumbing only. (A large init
    scale, because a frozen lm_head at the usual 0.02 cannot express a confident distribution.)"""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [r["instruction"] + " " + r["output"] for r in RECORDS] * 3
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                     eos_token="</s>")
    hf_tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.5,
                      pad_token_id=hf_tok.pad_token_id, bos_token_id=hf_tok.bos_token_id,
                      eos_token_id=hf_tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


CALL = react.render_call(react.ToolCall("Edge Detection On Image", "image/abcdefgh.png"))
RECORDS = [
    {"instruction": f"Tools: edge, pose. New input: find the edges of image/abcdefgh.png {i}", "input": "",
     "output": CALL, "id": f"p{i}"}
    for i in range(6)
] + [
    {"instruction": f"Tools: edge, pose. New input: hello there {i}", "input": "",
     "output": react.render_final(react.FinalAnswer("Hello!")), "id": f"n{i}"}
    for i in range(6)
]


def write_data(tmp_path, records, name="train.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(p)


def test_prompt_is_masked_and_response_is_learned(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    s = tokenize_record(RECORDS[0], tok, cutoff_len=512)
    n_resp = s["response_len"]
    assert s["labels"][:-n_resp] == [IGNORE] * (len(s["labels"]) - n_resp)
    assert s["labels"][-n_resp:] == s["input_ids"][-n_resp:] and s["labels"][-1] == tok.eos_token_id
    assert tokenize_record(RECORDS[0], tok, cutoff_len=8) is None  # over the cutoff: skipped, never truncated


def _episode() -> list[dict]:
    """The three turns of a chained episode, one record each, as the data builder writes them."""
    edge = react.ToolCall("Edge Detection On Image", "image/abcdefgh.png")
    canny = react.ToolCall("Generate Image Condition On Canny Image", "image/ab12_edge_abcdefgh_abcdefgh.png, a castle")
    p1 = "Tools: edge, pose. New input: find the edges of image/abcdefgh.png then make a castle\n"
    p2 = p1 + react.render_step(edge, "Result saved as image/ab12_edge_abcdefgh_abcdefgh.png")
    p3 = p2 + react.render_step(canny, "Result saved as image/cd34_canny_ab12_abcdefgh.png")
    final = react.render_final(react.FinalAnswer("Here is image/cd34_canny_ab12_abcdefgh.png"))
    outs = [react.render_call(edge), react.render_call(canny), final]
    return [{"instruction": p, "input": "", "output": o, "id": f"e{k}"}
            for k, (p, o) in enumerate(zip((p1, p2, p3), outs))]


def test_an_episode_is_encoded_once_with_the_same_loss_per_turn(tiny_model):
    """Merged turns cost one forward pass, and each turn's tokens get exactly the log-probabilities
    (so the loss) they get in their own record: causal attention never sees what follows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    records = [RECORDS[0], *_episode()[::-1], RECORDS[7]]  # file order does not matter
    assert group_turns(records) == [[0], [3, 2, 1], [4]]  # first turn first
    episode = _episode()
    merged = tokenize_turns(episode, tok, cutoff_len=1024)
    alone = [tokenize_record(r, tok, cutoff_len=1024) for r in episode]
    assert merged["records"] == 3 and len(merged["input_ids"]) < sum(len(a["input_ids"]) for a in alone)

    def logprobs(sample):
        ids = torch.tensor([sample["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        return [float(lp[i - 1, t]) for i, t in enumerate(sample["labels"]) if t != IGNORE]

    got, want = logprobs(merged), []
    for k, a in enumerate(alone):
        lp = logprobs(a)
        want += lp if k == len(alone) - 1 else lp[:-1]  # only the last turn ends with EOS when merged
    assert got == pytest.approx(want, abs=1e-4)


def test_turns_are_grouped_by_episode_and_turn_with_the_prompt_search_as_fallback(tiny_model):
    """Our builder's records name their episode and turn; the string search over prompts is only
    the fallback for records without them (foreign data such as the paper's files)."""
    from transformers import AutoTokenizer

    ep = [{**r, "episode": "E", "turn": k} for k, r in enumerate(_episode())]
    foreign = _episode()  # the same turns without the fields: found by their prompts
    mixed = [RECORDS[0], ep[2], ep[0], RECORDS[7], ep[1], *foreign[::-1]]
    assert group_turns(mixed) == [[0], [2, 4, 1], [3], [7, 6, 5]]  # turn order; by each group's last record
    assert group_turns(foreign) == [[0, 1, 2]]
    # The fields decide, not the prompts: two episodes stay apart though one prompt continues the other.
    apart = [{**foreign[0], "episode": "A", "turn": 0}, {**foreign[1], "episode": "B", "turn": 0}]
    assert group_turns(apart) == [[0], [1]]
    # A turn given twice: the second copy stays on its own.
    assert group_turns([ep[0], ep[1], {**ep[1], "id": "copy"}]) == [[0, 1], [2]]
    # Inconsistent fields (turns that do not continue each other) cannot be merged: tokenize_all
    # then falls back to the records one by one.
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tokenize_turns([ep[1], ep[0]], tok, cutoff_len=1024) is None
    assert records.episode_turn(ep[1]) == ("E", 1)
    assert records.episode_turn({**ep[1], "turn": True}) is None and records.episode_turn(foreign[0]) is None


def test_collate_left_pads_with_true_positions():
    a = {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "response_len": 2}
    b = {"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, IGNORE, IGNORE, 8, 9], "response_len": 2}
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"][0].tolist() == [0, 0, 5, 6, 7]
    assert batch["position_ids"][0].tolist()[2:] == [0, 1, 2] and batch["position_ids"][1].tolist() == [0, 1, 2, 3, 4]
    assert batch["keep"] == 2 and batch["labels"][0, -2:].tolist() == [6, 7]


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    """JSONL written with ensure_ascii=False keeps U+2028 raw (real ShareGPT text has it);
    str.splitlines() would cut the record there."""
    rec = {**RECORDS[0], "output": "Hello\u2028world"}
    p = tmp_path / "sep.jsonl"
    p.write_text(json.dumps(rec, ensure_ascii=False) + "\n" + json.dumps(RECORDS[1]) + "\n", encoding="utf-8")
    records, skipped = read_records([str(p)])
    assert records == [rec, RECORDS[1]] and skipped == {}


def test_bad_records_are_skipped_and_counted(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(RECORDS[0]) + "\n{not json\n" + json.dumps({"instruction": "x"}) + "\n\n")
    records, skipped = read_records([str(p)])
    assert len(records) == 1 and skipped == {"malformed JSON line": 1, "missing instruction/output": 1}
    with pytest.raises(ValueError):
        TrainConfig(cutoff_len=10)


def test_reader_takes_a_json_list_or_jsonl_and_reports_bad_lines_by_number(tmp_path):
    """records.py is the one JSON/JSONL reader (train, bench, the data builder, the teacher cache)."""
    items = [{"id": 1}, {"id": 2}]
    as_list = records.parse_jsonl("  " + json.dumps(items))
    assert as_list.items == [(1, items[0]), (2, items[1])] and not as_list.bad and as_list.list_error is None
    assert records.parse_jsonl(json.dumps(items), allow_list=False).items == [(1, items)]  # JSONL: one value a line
    text = json.dumps(items[0]) + "\n\n{broken\n" + json.dumps(items[1]) + "\r\n"
    found = records.parse_jsonl(text)
    assert found.items == [(1, items[0]), (4, items[1])]  # blank lines skipped, numbers kept
    assert [b.line for b in found.bad] == [3] and "Expecting property name" in found.bad[0].error
    broken = records.parse_jsonl('[{"id": 1},\n{"id": 2}\n')  # starts like a list, does not parse as one
    assert broken.list_error and [b.line for b in broken.bad] == [1] and broken.values() == [{"id": 2}]
    p = tmp_path / "list.json"
    p.write_text(json.dumps(RECORDS[:2]), encoding="utf-8")
    assert read_records([str(p)]) == (RECORDS[:2], {})


def test_reader_keeps_line_and_paragraph_separators_inside_strings(tmp_path):
    rec = {"id": "s", "output": "a\u2028b\u2029c\x85d"}
    p = tmp_path / "sep.jsonl"
    records.append_jsonl(p, [rec, {"id": "t"}])
    assert "\u2028" in p.read_text(encoding="utf-8")  # kept raw (ensure_ascii=False)
    assert records.read_jsonl(p).values() == [rec, {"id": "t"}]


def test_a_partial_last_line_is_cut_before_appending(tmp_path):
    p = tmp_path / "work.jsonl"
    assert not records.cut_partial_line(p)  # no file: nothing to do
    records.append_jsonl(p, [{"id": 1}])
    with open(p, "a", encoding="utf-8") as f:
        f.write('{"id": 2, "outp')  # a kill mid-write
    assert records.cut_partial_line(p) and not records.cut_partial_line(p)
    records.append_jsonl(p, [{"id": 3}], fsync=False)
    assert p.read_text(encoding="utf-8") == records.to_jsonl([{"id": 1}, {"id": 3}])


def test_cli_defaults_are_the_train_config_defaults():
    args = vars(parser().parse_args([]))
    defaults = TrainConfig()
    for name, value in args.items():
        want = getattr(defaults, name)
        assert (list(want) if isinstance(want, tuple) else want) == value, name
    assert TrainConfig(**args) == defaults


def test_training_lowers_loss_saves_and_reloads(tiny_model, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(base_model=tiny_model, data=[write_data(tmp_path, RECORDS)], out_dir=str(out), max_steps=40,
                      gradient_accumulation=2, learning_rate=5e-2, warmup_steps=0, save_steps=100, dtype="fp32",
                      lora_r=8,
                      save_dtype="bf16")
    train(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 40 and metrics[-1]["loss"] < 0.2 * metrics[0]["loss"]
    assert all(m["rss_mb"] > 0 for m in metrics)  # the process's memory, logged each step (psutil is installed)
    # kernel time and page faults per step (a CPU run that slows as it ages shows it there)
    assert all(m["page_faults"] >= 0 and m["sys_s"] >= 0 for m in metrics)
    assert sum(m["page_faults"] for m in metrics) > 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "template.json").is_file()
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["samples"] == 12 and len(saved["data_sha256"]) == 64 and saved["lora_alpha"] == 16
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {torch.bfloat16}

    from gpt4tools.llm import load_llm
    from gpt4tools.train import loss_on_tail

    tuned = load_llm(tiny_model, adapter=str(out), dtype="fp32")
    base = load_llm(tiny_model, adapter="none", dtype="fp32")
    batch = collate([tokenize_record(RECORDS[0], tuned.tokenizer, 512)], tuned.tokenizer.pad_token_id)
    with torch.no_grad():  # the reloaded adapter carries what was learned
        assert float(loss_on_tail(tuned.model, batch)[0]) < 0.5 * float(loss_on_tail(base.model, batch)[0])
        # --pad-to-multiple: more left padding, the same loss (positions and mask ignore the pads)
        sample = tokenize_record(RECORDS[0], tuned.tokenizer, 512)
        multiple = len(sample["input_ids"]) + 5
        padded = collate([sample], tuned.tokenizer.pad_token_id, pad_to_multiple=multiple)
        assert padded["input_ids"].shape[1] == multiple and int(padded["attention_mask"].sum()) == multiple - 5
        unpadded_loss = float(loss_on_tail(tuned.model, batch)[0])
        assert float(loss_on_tail(tuned.model, padded)[0]) == pytest.approx(unpadded_loss, rel=1e-4)
    gen = tuned.generate(RECORDS[0]["instruction"], stop=react.STOP, max_new_tokens=12)
    assert 0 < gen.completion_tokens <= 12 and gen.text


def test_training_can_start_from_an_earlier_adapter(tiny_model, tmp_path):
    """--init-adapter continues an adapter on new data: step 0 starts from its weights (its loss
    is the trained adapter's, far below a fresh one's) and its LoRA shape is kept."""
    data = write_data(tmp_path, RECORDS)
    common = dict(base_model=tiny_model, data=[data], gradient_accumulation=2, warmup_steps=0, save_steps=100,
                  dtype="fp32", lora_dropout=0.0)
    train(TrainConfig(out_dir=str(tmp_path / "first"), max_steps=30, learning_rate=5e-2, lora_r=4, **common))
    fresh = tmp_path / "fresh"
    train(TrainConfig(out_dir=str(fresh), max_steps=1, learning_rate=1e-9, **common))
    cont = tmp_path / "continued"
    train(TrainConfig(out_dir=str(cont), max_steps=1, learning_rate=1e-9, init_adapter=str(tmp_path / "first"),
                      **common))
    first_loss = lambda d: json.loads((d / "metrics.jsonl").read_text().splitlines()[0])["loss"]  # noqa: E731
    assert first_loss(cont) < 0.5 * first_loss(fresh)
    assert json.loads((cont / "adapter_config.json").read_text())["r"] == 4
    with pytest.raises(ValueError, match="no adapter_config.json"):
        train(TrainConfig(out_dir=str(tmp_path / "bad"), max_steps=1, init_adapter=str(tmp_path), **common))


def test_sigterm_saves_then_resume_reaches_the_same_result(tiny_model, tmp_path):
    """A real `python -m gpt4tools train` process gets SIGTERM (what Job.stop sends) mid-run: it ends
    after the step in progress with a checkpoint (the `checkpoint` link points at a whole one),
    exits non-zero saying so, and the same command finishes with the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    data = write_data(tmp_path, RECORDS)
    common = ["--base-model", tiny_model, "--data", data, "--max-steps", "40", "--gradient-accumulation", "2",
              "--learning-rate", "1e-2", "--warmup-steps", "0", "--save-steps", "1000", "--dtype", "fp32",
              "--lora-dropout", "0", "--threads", "1"]
    cmd = lambda out: [sys.executable, "-m", "gpt4tools", "train", *common, "--out-dir", str(out)]  # noqa: E731
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(cmd(tmp_path / "straight"), check=True, capture_output=True, env=env, timeout=600)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:  # wait until training runs, then stop it
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    tail = proc.stdout.read()
    assert proc.wait(timeout=120) != 0 and "stopped at step" in tail and "(SIGTERM)" in tail
    ckpt = out / "checkpoint"
    assert ckpt.is_symlink() and (ckpt / "trainer_state.pt").is_file()
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)["state"]
    step = state["step"]
    assert 3 <= step < 40 and not (out / "adapter_model.safetensors").exists()
    done = subprocess.run(cmd(out), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and f"resumed at step {step}" in done.stdout + done.stderr
    # the whole run's time and tokens, not only the resumed process's
    straight, resumed = (json.loads((d / "train_config.json").read_text()) for d in (tmp_path / "straight", out))
    assert resumed["train_tokens"] == straight["train_tokens"] and state["tokens"] > 0
    assert state["seconds"] > 0 and resumed["train_seconds"] >= round(state["seconds"], 1)

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint", "checkpoint-40"]  # older ones gone


def test_resume_reaches_the_same_result(tiny_model, tmp_path):
    data = write_data(tmp_path, RECORDS)
    common = dict(base_model=tiny_model, data=[data], max_steps=6, gradient_accumulation=2, learning_rate=1e-2,
                  warmup_steps=0, save_steps=3, dtype="fp32", lora_dropout=0.0)
    train(TrainConfig(out_dir=str(tmp_path / "straight"), **common))

    def die_after_4(step, total, m):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out_dir=str(tmp_path / "resumed"), **common), progress=die_after_4)
    train(TrainConfig(out_dir=str(tmp_path / "resumed"), **common))

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_process_steps_pauses_and_the_same_command_goes_on_to_the_same_result(tiny_model, tmp_path):
    """--process-steps N: a process checkpoints and exits with PAUSED after N steps (a CPU run slows as
    its process ages); the same command, run again, goes on there and ends where one process would."""
    from gpt4tools.train import PAUSED, TrainingPaused, main

    data = write_data(tmp_path, RECORDS)
    common = dict(base_model=tiny_model, data=[data], max_steps=6, gradient_accumulation=2, learning_rate=1e-2,
                  warmup_steps=0, save_steps=100, dtype="fp32", lora_dropout=0.0)
    train(TrainConfig(out_dir=str(tmp_path / "straight"), **common))
    paused = TrainConfig(out_dir=str(tmp_path / "paused"), process_steps=4, **common)
    with pytest.raises(TrainingPaused, match="paused at step 4 of 6"):
        train(paused)
    assert not (tmp_path / "paused" / "adapter_model.safetensors").exists()
    argv = ["--base-model", tiny_model, "--data", data, "--out-dir", str(tmp_path / "cli"), "--max-steps", "6",
            "--gradient-accumulation", "2", "--learning-rate", "1e-2", "--warmup-steps", "0", "--dtype", "fp32",
            "--lora-dropout", "0", "--process-steps", "2"]
    assert [main(argv) for _ in range(3)] == [PAUSED, PAUSED, 0]
    train(paused)  # the rest: steps 5-6

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    for run in ("paused", "cli"):
        b = load_file(tmp_path / run / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), run
        steps = [json.loads(line)["step"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4, 5, 6], run


def test_two_process_ddp_on_cpu(tiny_model, tmp_path):
    """The multi-GPU path (torchrun / accelerate, DDP) exercised with 2 CPU processes (gloo)."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "gpt4tools", "train",
           "--device", "cpu", "--base-model", tiny_model,
           "--data", write_data(tmp_path, RECORDS), "--out-dir", str(out), "--max-steps", "3",
           "--gradient-accumulation", "1", "--dtype", "fp32"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["processes"] == 2 and (out / "adapter_model.safetensors").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3  # logged once (rank 0), not per process
    assert metrics[1]["lr"] > 0  # the schedule runs once per optimizer step, not once per process


def test_the_packed_head_and_half_precision_adapters_keep_the_loss_and_gradients(tiny_model):
    """The two CPU speed-ups of a training forward pass change how it is computed, not what:
    the LM head's input packed gives the same logits and gradients without the batched matmul that
    copies its weight, and bf16 adapters under autocast (fp32 weights and gradients) give the loss and
    gradients of the fp32 adapters within bf16's precision."""
    from types import SimpleNamespace

    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt4tools.llm.hf import pack_head_input
    from gpt4tools.train import _half_precision_adapters, loss_on_tail

    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = collate([tokenize_record(RECORDS[0], tok, 512)], tok.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    lora_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "down_proj"])
    model = get_peft_model(model, lora_config)
    torch.manual_seed(1)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in lora.values():  # lora_B starts at zero: give the adapter something to say
        torch.nn.init.normal_(p, std=0.2)

    def loss_and_grads(autocast):
        model.zero_grad()
        run = SimpleNamespace(cfg=TrainConfig(autocast=autocast), accelerator=Accelerator(cpu=True), model=model)
        with _half_precision_adapters(run):
            loss = loss_on_tail(model, batch)[0]
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in lora.items()}

    base_loss, base_grads = loss_and_grads(autocast=False)
    # what the adapted layers hand the head: the response's positions of a longer sequence, needing grad
    x = torch.randn(1, 9, 32, dtype=torch.bfloat16, requires_grad=True)[:, -5:, :]
    head = model.get_output_embeddings()  # frozen by peft

    def ops(x):
        with torch.profiler.profile() as prof:
            out = head(x)
        return out, {e.key for e in prof.key_averages()}

    plain, plain_ops = ops(x)
    assert "aten::bmm" in plain_ops  # torch's batched matmul against an expanded copy of the weight
    pack_head_input(model)  # what training does before adding LoRA
    packed, packed_ops = ops(x)
    assert packed.shape == plain.shape and torch.equal(packed, plain)
    assert "aten::bmm" not in packed_ops and "aten::mm" in packed_ops  # one plain matmul
    packed_loss, packed_grads = loss_and_grads(autocast=False)  # the whole model, the head's input packed
    assert packed_loss == pytest.approx(base_loss, rel=1e-3)
    assert all(torch.allclose(g, base_grads[n], rtol=1e-2, atol=1e-3) for n, g in packed_grads.items())

    half_loss, half_grads = loss_and_grads(autocast=True)
    assert half_loss == pytest.approx(base_loss, rel=2e-2)
    for n, g in half_grads.items():
        assert lora[n].dtype == g.dtype == torch.float32  # master weights and gradients stay fp32
        assert torch.nn.functional.cosine_similarity(g.flatten(), base_grads[n].flatten(), dim=0) > 0.98, n
    off = SimpleNamespace(cfg=TrainConfig(autocast=True), accelerator=Accelerator(cpu=True),
                          model=get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                               LoraConfig(r=4, target_modules=["q_proj"])))
    assert not torch.is_autocast_enabled("cpu")
    with _half_precision_adapters(off):  # an fp32 base: nothing to do
        assert not torch.is_autocast_enabled("cpu")
