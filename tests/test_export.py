"""Export: a merged model computes what base + adapter computed; the LoRA GGUF written by
llama.cpp's converter parses and holds one A/B pair per adapted projection; the model card."""

import json

import pytest
import torch
from test_train import make_tiny_model

from gpt4tools import export
from gpt4tools.llm import gguf
from gpt4tools.prompt import PromptTemplate


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A tiny Llama with a LoRA whose B is not zero (so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("export")
    base = make_tiny_model(root / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    out = root / "adapter"
    model.save_pretrained(out)
    PromptTemplate.load().save(out)
    (out / "train_config.json").write_text(json.dumps({"base_model": base, "lora_r": 4, "samples": 12,
                                                       "command": "python -m gpt4tools train ..."}))
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0, "tokens_per_s": 100}\n'
                                       '{"step": 2, "loss": 1.5, "tokens_per_s": 120}\n')
    return base, out


def test_merged_model_matches_base_plus_adapter(adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, lora = adapter
    ids = torch.tensor([[2, 5, 7, 9, 11]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(lora))(ids).logits
    out = export.export_merged(lora, tmp_path / "merged")
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert not torch.allclose(plain, want)  # the adapter does something ...
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # ... and the merge keeps it
    assert (out / "template.json").is_file() and not (tmp_path / "merged.partial").exists()


def test_lora_gguf_from_llama_cpp_converter(adapter, tmp_path):
    from gguf import GGUFReader

    base, lora = adapter
    out = export.export_gguf_lora(lora, tmp_path / "lora.gguf")
    reader = GGUFReader(str(out))
    names = [t.name for t in reader.tensors]
    # 2 layers x 4 projections x (A, B), in llama.cpp's tensor names
    assert len(names) == 16 and {n.rsplit(".", 1)[-1] for n in names} == {"lora_a", "lora_b"}
    assert any(n.startswith("blk.1.attn_q.") for n in names)
    alpha = reader.fields["adapter.lora.alpha"]
    assert float(alpha.parts[alpha.data[0]][0]) == 8.0


def test_bad_adapter_and_card(adapter, tmp_path):
    with pytest.raises(export.ExportError, match="not a LoRA adapter"):
        export.export_merged(tmp_path, tmp_path / "x")
    _, lora = adapter
    card = export.write_card(lora).read_text()
    assert "| lora_r | `4` |" in card and "mean 2.000 over the first 1 steps -> 1.500 over the last 1 (of 2)" in card


def test_cli_needs_something_to_do(adapter, capsys):
    _, lora = adapter
    with pytest.raises(SystemExit):
        export.main(["--adapter", str(lora)])
    assert export.main(["--adapter", str(lora.parent / "missing"), "--merged", str(lora.parent / "m")]) == 2
    assert "not a LoRA adapter" in capsys.readouterr().err


def test_cast_adapter_halves_the_file_and_keeps_what_it_computes(adapter, tmp_path):
    import shutil

    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    base, lora = adapter
    half = tmp_path / "half"
    shutil.copytree(lora, half)
    def tensors(folder):
        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    assert export.main(["--adapter", str(half), "--cast", "bf16"]) == 0
    before, after = tensors(lora), tensors(half)
    assert before.keys() == after.keys() and {t.dtype for t in after.values()} == {torch.bfloat16}
    assert sum(t.nbytes for t in after.values()) * 2 == sum(t.nbytes for t in before.values())
    assert (half / "adapter_model.safetensors").stat().st_size < (lora / "adapter_model.safetensors").stat().st_size
    ids = torch.tensor([[2, 5, 7, 9, 11]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(lora))(ids).logits
        got = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(half))(ids).logits
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)  # bf16 rounding of A and B only
    with pytest.raises(export.ExportError, match="no adapter_model.safetensors"):
        export.cast_adapter(tmp_path, "bf16")


def test_converter_download_progress_stays_off_stdout(tmp_path, monkeypatch, capsys):
    """`chat --json` merges the adapter on its first run, which unpacks llama.cpp's converters;
    their download message once went to stdout and broke the JSON there."""
    from gpt4tools.convert import sources

    monkeypatch.setenv("GPT4TOOLS_CACHE", str(tmp_path))

    def download(spec, sha256, cache, say):
        say(f"downloading {spec} ...")
        raise export.FetchError("offline in this test")

    monkeypatch.setattr(sources, "download", download)
    with pytest.raises(export.FetchError):
        gguf.converter_dir()
    out, err = capsys.readouterr()
    assert out == "" and "downloading" in err
