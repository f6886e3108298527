"""The tool contract, the image store's guards, the registry and the prompt layout."""

import os

import pytest
from PIL import Image

from gpt4tools.images import ImageError, ImageLimits, ImageStore
from gpt4tools.prompt import PromptTemplate, builtin_names
from gpt4tools.registry import ToolRegistry, UnknownToolError, build_registry, parse_load
from gpt4tools.tool import ToolInputError

from fakes import Ask, Invert  # noqa: E402


def test_spec_input_sentences():
    assert Invert.spec.input_description() == "The input to this tool should be a string, representing the image_path."
    assert Ask.spec.input_description().endswith(
        "comma separated string of two, representing the image_path and question.")
    assert Invert.spec.prompt_line().startswith("> Invert The Image: useful to invert colours. The input")


def test_split_input_keeps_commas_in_last_argument():
    assert Ask.spec.split_input(" image/a.png , is it red, or blue? ") == ["image/a.png", "is it red, or blue?"]
    with pytest.raises(ToolInputError, match="takes 1"):
        Invert.spec.split_input("image/a.png, extra")
    with pytest.raises(ToolInputError):
        Ask.spec.split_input("image/a.png")
    with pytest.raises(ToolInputError):
        Ask.spec.split_input("image/a.png,   ")
    with pytest.raises(ToolInputError, match="limit"):
        Ask.spec.split_input("image/a.png, " + "x" * 5000)


def test_tool_call_saves_chained_result(store, upload):
    name = upload("chelsea.jpg")
    obs = Invert()(name, store)
    assert obs.text.startswith("Result saved as image/") and obs.image in obs.text
    stem = name.split("/")[1][:-4]
    assert obs.image.endswith(f"_invert_{stem}_{stem}.png")
    again = Invert()(obs.image, store)  # the original id survives a second step
    assert again.image.endswith(f"_{obs.image.split('/')[1][:4]}_{stem}.png")
    a, b = store.open(name), store.open(again.image)
    assert list(a.getdata())[:100] == list(b.getdata())[:100]  # inverting twice is the identity


def test_store_refuses_escapes_and_bad_files(store, upload, tmp_path):
    upload("chelsea.jpg")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (32, 32)).save(outside)
    for bad in ["../secret.png", str(outside), "image/../../secret.png", "", "image/nothere.png"]:
        with pytest.raises(ImageError):
            store.resolve(bad)
    os.symlink(outside, store.root / "image" / "link.png")
    with pytest.raises(ImageError, match="link"):
        store.resolve("image/link.png")
    (store.root / "image" / "notimage.png").write_text("hello")
    with pytest.raises(ImageError, match="not a readable image"):
        store.open("image/notimage.png")
    good = store.root / "image" / "trunc.png"
    Image.new("RGB", (256, 256), "red").save(tmp_path / "full.png")
    good.write_bytes((tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(ImageError):
        store.open("image/trunc.png")
    Image.new("RGB", (1, 1)).save(store.root / "image" / "tiny.png")
    with pytest.raises(ImageError, match="at least"):
        store.open("image/tiny.png")


def test_decompression_bomb_refused(tmp_path):
    store = ImageStore(tmp_path / "s", ImageLimits(max_pixels=1_000_000))
    Image.new("L", (2000, 2000)).save(tmp_path / "big.png")  # 4 Mpx, tiny on disk
    with pytest.raises(ImageError, match="pixels"):
        store.add_upload(tmp_path / "big.png")
    huge = tmp_path / "huge.png"  # a 20000x20000 header: refused before decoding
    Image.new("1", (20000, 20000)).save(huge)
    with pytest.raises(ImageError):
        ImageStore(tmp_path / "t").add_upload(huge)


def test_upload_is_shrunk_and_renamed(store, tmp_path):
    Image.new("RGB", (2000, 1000), "blue").save(tmp_path / "wide.jpg")
    name = store.add_upload(tmp_path / "wide.jpg")
    assert len(name) == len("image/abcdefgh.png") and store.open(name).size == (768, 384)


def test_registry_resolution_and_errors():
    reg = ToolRegistry([Invert(), Ask()])
    assert reg.resolve("invert the image") is reg["Invert The Image"]
    assert reg.resolve("Ask Something") is reg["Ask"]
    with pytest.raises(UnknownToolError, match="try one of"):
        reg.resolve("Fly")
    with pytest.raises(ValueError, match="duplicate"):
        ToolRegistry([Invert(), Invert()])
    assert parse_load("Invert_cuda:0, Ask The Image_cpu") == {"Invert": "cuda:0", "Ask The Image": "cpu"}
    chosen = build_registry("Invert_cuda:1", catalog=[Invert, Ask])
    assert list(chosen) == ["Invert The Image"] and chosen["Invert The Image"].device == "cuda:1"
    with pytest.raises(UnknownToolError):
        build_registry("Nope_cpu", catalog=[Invert])


def test_prompt_layout_and_template_round_trip(tmp_path):
    t = PromptTemplate.load()
    specs = [Invert.spec, Ask.spec]
    p = t.render(specs, "Human: hi\nAI: hello", "invert image/abcdefgh.png", "")
    assert (p.index("TOOLS:\n------") < p.index("> Invert The Image:")
            < p.index("should be one of [Invert The Image, Ask]"))
    assert p.index("Previous conversation:\nHuman: hi") < p.index("New input: invert image/abcdefgh.png")
    assert "Thought: Do I need to use a tool? No\nAI: [your response here]" in p
    t.save(tmp_path)
    assert PromptTemplate.load(tmp_path) == t
    assert len(builtin_names()) >= 3
    with pytest.raises(FileNotFoundError):
        PromptTemplate.load("nope")


def test_idle_session_folders_are_cleaned_even_when_files_vanish_mid_scan(tmp_path):
    """A file that disappears while the cleanup scans (here: a dangling link, whose stat fails as a
    vanished file's does) must not stop the round; fresh folders stay."""
    import os
    import time

    from gpt4tools.session import cleanup_sessions

    old, fresh = tmp_path / "old", tmp_path / "fresh"
    for d in (old, fresh):
        (d / "image").mkdir(parents=True)
        (d / "image" / "a.png").write_bytes(b"x")
        (d / "image" / "gone.png").symlink_to(d / "image" / "never-existed.png")
    day_ago = time.time() - 2 * 86400
    for p in (old / "image" / "a.png", old / "image", old):
        os.utime(p, (day_ago, day_ago))
    assert cleanup_sessions(86400, root=tmp_path) == 1
    assert not old.exists() and (fresh / "image" / "a.png").exists()


def test_the_status_line_says_which_backend_serves_and_why(tmp_path, monkeypatch):
    """Without llama.cpp the default serves on transformers, and the note says whether run.sh is
    building llama.cpp in the background (it holds the build lock) or how to get it."""
    import fcntl
    import importlib.util

    from gpt4tools import llm

    monkeypatch.setenv("GPT4TOOLS_CACHE", str(tmp_path))
    assert llm.backend_note("transformers", "default") == "transformers (as asked)"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    assert "`bash run.sh setup` builds it" in llm.backend_note("auto", "default")
    lock = tmp_path / "wheels" / "llama-cpp-build.lock"
    lock.parent.mkdir()
    lock.touch()
    assert "`bash run.sh setup` builds it" in llm.backend_note("auto", "default")  # a lock file nobody holds
    with lock.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what flock(1) in run.sh does while the build runs
        # flock locks belong to the open file: a second open() in this process is refused as another's would be
        assert "being built in the background" in llm.backend_note("auto", "default")
