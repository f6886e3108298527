"""Generative and hub-weight tools (tools/generate.py, edit.py, depth.py, upscale.py,
asset3d.py), through the real Tool.__call__ path with an ImageStore.

None of their weights can be fetched on this machine (hub-only), so the model-backed tests
run on tiny randomly initialised checkpoints (tests/tiny_generative_models.py) installed the
way a user would (`weights fetch NAME --from DIR`). Their outputs are noise: those tests
check sizes, names, seeding, caching, devices and the unavailable state. Content is checked
where it does not depend on weights: the depth -> normal conversion, the paste-back of a
replaced object, the 3D file, the size caps; and, when the real CenterNet is fetched, that
Replace regenerates exactly the region of the object the real segmenter finds.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from gpt4tools.images import ImageError
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import ToolInputError, ToolUnavailable
from tools.asset3d import Text2Asset3D
from tools.depth import Image2Depth, Image2Normal, depth_to_normal
from tools.edit import InstructPix2Pix, ReplaceObject, paste
from tools.generate import CONTROLNET_TOOLS, PROMPT_SUFFIX, Text2Image, working_size
from tools.upscale import SuperResolution, cap_size

from conftest import ASSETS, requires_weights

IMAGE_TOOLS = (*CONTROLNET_TOOLS, InstructPix2Pix, ReplaceObject, Image2Depth, Image2Normal, SuperResolution)
TEXT_TOOLS = (Text2Image, Text2Asset3D)
ALL_TOOLS = (*TEXT_TOOLS, *IMAGE_TOOLS)


def names_in(text: str) -> list[str]:
    return re.findall(r"image/[a-z0-9_\-]+\.(?:png|ply)", text)


def valid_input(cls, image: str) -> str:
    """A well-formed Action Input for the tool, around an uploaded image name."""
    if not cls.spec.needs_image:
        return "a dog"
    return ", ".join([image, *["cat", "a dog"][3 - len(cls.spec.args) :]])


def fast(tool, resolution: int = 64):
    """Two denoising steps at the smallest working size: the tiny models need no more."""
    tool.steps = 2
    tool.resolution = resolution
    return tool


# -- specs ----------------------------------------------------------------------------------------
def test_specs_match_the_paper():
    follows = {
        "Generate Image Condition On Canny Image": "Edge Detection On Image",
        "Generate Image Condition On Soft Hed Boundary Image": "Hed Detection On Image",
        "Generate Image Condition On Sketch Image": "Sketch Detection On Image",
        "Generate Image Condition On Pose Image": "Pose Detection On Image",
        "Generate Image Condition On Segmentations": "Segment the Image",
        "Generate Image Condition On Depth": "Predict Depth On Image",
        "Generate Image Condition On Normal Map": "Predict Normal Map On Image",
    }
    assert {c.spec.name: c.spec.follows for c in CONTROLNET_TOOLS} == follows
    arity = {c.spec.name: len(c.spec.args) for c in ALL_TOOLS}
    assert arity["Replace Something From The Photo"] == 3
    assert arity["Generate Image From User Input Text"] == arity["Generate 3D Asset From User Input Text"] == 1
    assert all(arity[n] == 2 for n in follows) and arity["Instruct Image Using Text"] == 2
    unseen = {c.spec.name for c in ALL_TOOLS if not c.spec.seen}
    assert unseen == {"Image Super-Resolution", "Generate 3D Asset From User Input Text"}
    for cls in ALL_TOOLS:
        spec = cls.spec
        assert spec.description.startswith("useful when") and "like:" in spec.description, spec.name
        assert "input to this tool" not in spec.description.lower(), spec.name
        assert len(spec.paraphrases) >= 2 and spec.output == "image" and cls.weights, spec.name
    assert len({c.spec.slug for c in ALL_TOOLS}) == len(ALL_TOOLS)


def test_prompt_and_working_size():
    assert Text2Image().prompt("a red bicycle") == f"a red bicycle, {PROMPT_SUFFIX}"
    assert working_size(512, 512) == (512, 512)
    assert working_size(451, 300) == (512, 320)  # long side 512, both multiples of 64, aspect ~kept
    assert working_size(300, 1200) == (128, 512)
    assert working_size(4000, 10) == (512, 64)  # never below one latent block


# -- bad input (needs no weights: checked before availability) ------------------------------------
@pytest.mark.parametrize("cls", IMAGE_TOOLS, ids=lambda c: c.__name__)
def test_bad_image_arguments(cls, store, upload, tmp_path):
    tool = cls()
    rest = valid_input(cls, "")  # ", a dog" etc.
    (store.root / "image" / "notes.png").write_text("not an image")
    (tmp_path / "secret.png").write_bytes((ASSETS / "coffee.jpg").read_bytes())
    for name, message in [
        ("image/missing.png", "does not exist"),
        ("../secret.png", "outside"),
        (str(tmp_path / "secret.png"), "outside"),
        ("image/notes.png", "not a readable image"),
    ]:
        with pytest.raises(ImageError, match=message):
            tool(name + rest, store)
    good = upload("chelsea.jpg")
    if len(cls.spec.args) > 1:
        with pytest.raises(ToolInputError, match="comma-separated"):
            tool(good, store)  # the text argument is missing
        with pytest.raises(ToolInputError, match="characters long"):
            tool(valid_input(cls, good).replace("a dog", "x" * 2000), store)
    else:
        with pytest.raises(ToolInputError, match="comma-separated"):
            tool(f"{good}, a dog", store)  # an image-only tool given extra text


@pytest.mark.parametrize("cls", TEXT_TOOLS, ids=lambda c: c.__name__)
def test_bad_text_arguments(cls, store):
    for raw in ("", "   "):
        with pytest.raises(ToolInputError, match="argument"):
            cls()(raw, store)
    with pytest.raises(ToolInputError, match="characters long"):
        cls()("a" * 1001, store)


# -- unavailable ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL_TOOLS, ids=lambda c: c.__name__)
def test_unavailable_without_weights(cls, store, upload, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "empty"))
    tool = cls()
    avail = tool.availability()
    fetch = f"python -m gpt4tools weights fetch {cls.weights[0]}"
    assert not avail.ok and fetch in avail.reason
    with pytest.raises(ToolUnavailable, match=re.escape(fetch)):
        tool(valid_input(cls, upload("chelsea.jpg")), store)
    loaded = CACHE.keys()
    assert not any(k.startswith(f"{w}@") for w in cls.weights for k in loaded)  # nothing was loaded


def test_controlnet_needs_its_own_weights_too(tiny_src, tmp_path, monkeypatch):
    from tiny_generative_models import install

    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "ck"))
    install(tiny_src, ("sd15",))
    assert Text2Image().availability().ok
    for cls in CONTROLNET_TOOLS:
        avail = cls().availability()
        assert not avail.ok and f"weights fetch {cls.controlnet}" in avail.reason


def test_cuda_requested_without_gpu(tiny):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    avail = CONTROLNET_TOOLS[0](device="cuda").availability()
    assert not avail.ok and "cuda" in avail.reason and "no CUDA GPU" in avail.reason
    assert not Image2Depth(device="tpu").availability().ok


# -- tiny-model runs -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory):
    pytest.importorskip("diffusers")
    import torch

    from tiny_generative_models import build_all

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see `tiny`
    try:
        return build_all(tmp_path_factory.mktemp("tiny-generative-src"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_installed(tiny_src, tmp_path_factory):
    from tiny_generative_models import install

    dest = tmp_path_factory.mktemp("tiny-generative-checkpoints")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT4TOOLS_CHECKPOINTS", str(dest))
        install(tiny_src)
    return dest


@pytest.fixture
def tiny(tiny_installed, monkeypatch):
    import torch

    from tiny_generative_models import NAMES

    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tiny_installed))
    # The cache budgets with the real models' sizes; keep all the tiny ones loaded at once.
    monkeypatch.setattr(CACHE, "budget_mb", 10**7)
    # Tiny tensors: thread start-up costs more than it saves, and on a busy machine several
    # threads per op made these tests 5-10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_installed
    torch.set_num_threads(threads)
    loaded = CACHE.keys()
    for key in loaded:  # random weights must not serve a later test
        if key.partition("@")[0] in NAMES:
            CACHE.unload(key)


def test_text2image_is_seeded(tiny, store):
    assert Text2Image().resolution == 512  # SD 1.5's own size; smaller here only to be quick
    tool = fast(Text2Image(), resolution=128)
    first = tool("a red bicycle", store)
    second = tool("a red bicycle", store)
    assert re.fullmatch(r"Result saved as image/[a-z0-9]{4}_gen\.png", first.text)
    a, b = np.asarray(store.open(first.image)), np.asarray(store.open(second.image))
    assert a.shape == (128, 128, 3) and a.std() > 1  # an image, not a constant fill
    assert np.array_equal(a, b)  # same text, same seed: same image


def test_controlnet_tools_share_one_base(tiny, store, upload, monkeypatch):
    from diffusers import StableDiffusionPipeline

    loads = []
    original = StableDiffusionPipeline.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(counting))
    name = upload("coffee.jpg")
    orig_id = name.split("/")[1][:-4]
    for cls in CONTROLNET_TOOLS:
        obs = fast(cls())(f"{name}, a glass of beer", store)
        assert re.fullmatch(rf"Result saved as image/[a-z0-9]{{4}}_{cls.spec.slug}_{orig_id}_{orig_id}\.png", obs.text)
        assert store.open(obs.image).size == (600, 400)
    fast(Text2Image())("a cup", store)
    assert len(loads) == 1 and loads[0].endswith("sd15")  # one UNet/VAE/text encoder for all eight tools
    keys = CACHE.keys()
    assert [k for k in keys if k.startswith("sd15@")] == ["sd15@cpu"]
    assert {k for k in keys if k.startswith("controlnet-")} == {f"{c.controlnet}@cpu" for c in CONTROLNET_TOOLS}


def test_instruct_pix2pix(tiny, store, upload):
    name = upload("chelsea.jpg")
    tool = fast(InstructPix2Pix())
    first, second = tool(f"{name}, make it winter", store), tool(f"{name}, make it winter", store)
    assert "_pix2pix_" in first.image
    a, b = np.asarray(store.open(first.image)), np.asarray(store.open(second.image))
    assert a.shape == (300, 451, 3) and np.array_equal(a, b)


@pytest.fixture
def box_segmenter(monkeypatch):
    """Stand-in for tools.masks.segment_object (the object family's tests cover the real one):
    a fixed box for "cat", nothing for anything else."""
    import tools.edit
    import tools.masks
    from gpt4tools.tool import Availability

    def segment(img, query, device="cpu"):
        if query != "cat":
            return None
        mask = np.zeros((img.height, img.width), bool)
        mask[100:200, 150:300] = True
        return mask

    monkeypatch.setattr(tools.masks, "segment_object", segment)
    monkeypatch.setattr(tools.edit, "segmenter_availability", lambda: Availability(True))


def test_replace_changes_only_the_object(tiny, store, upload, box_segmenter):
    name = upload("chelsea.jpg")
    obs = fast(ReplaceObject())(f"{name}, cat, a small dog", store)
    assert "_replace_" in obs.image
    before, after = np.asarray(store.open(name)).astype(int), np.asarray(store.open(obs.image)).astype(int)
    assert after.shape == before.shape
    far = np.ones(before.shape[:2], bool)
    far[100 - 20 : 200 + 20, 150 - 20 : 300 + 20] = False  # box + dilation (2% of 300 = 6 px) + feather
    assert np.array_equal(after[far], before[far])  # untouched outside the object, to the pixel
    assert np.abs(after[110:190, 160:290] - before[110:190, 160:290]).mean() > 5  # regenerated inside


def test_replace_reports_a_missing_object(tiny, store, upload, box_segmenter):
    name = upload("chelsea.jpg")
    obs = fast(ReplaceObject())(f"{name}, giraffe, a dog", store)
    assert obs.image is None and obs.text == "No giraffe was found in the image, so nothing was replaced."
    assert store.names() == [name]


@requires_weights("centernet")
def test_replace_with_the_real_segmenter(tiny_src, tmp_path, monkeypatch, store, upload):
    """The real object mask (CenterNet box -> GrabCut) decides what is regenerated: every
    changed pixel lies on the cup or within the grow + feather margin around it."""
    import cv2

    from gpt4tools import weights
    from tools.masks import segment_object

    from tiny_generative_models import install

    checkpoints = tmp_path / "ck"
    checkpoints.mkdir()
    (checkpoints / "centernet").symlink_to(weights.path("centernet"))  # the real detector, nothing else
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(checkpoints))
    install(tiny_src, ("sd-inpaint",))
    name = upload("coffee.jpg")
    cup = segment_object(store.open(name), "cup")
    assert cup is not None and 0.05 < cup.mean() < 0.5
    try:
        obs = fast(ReplaceObject())(f"{name}, cup, a glass of orange juice", store)
    finally:
        CACHE.unload("sd-inpaint@")
    before, after = np.asarray(store.open(name)).astype(int), np.asarray(store.open(obs.image)).astype(int)
    changed = np.abs(after - before).max(axis=-1) > 0
    margin = cv2.dilate(cup.astype(np.uint8), np.ones((2 * 16 + 1,) * 2, np.uint8)) > 0  # 8 px grow + 4 feather
    assert changed[cup].mean() > 0.9 and not changed[~margin].any()


def test_paste_feathers_only_near_the_mask():
    original = Image.new("RGB", (64, 64), (10, 20, 30))
    generated = Image.new("RGB", (64, 64), (200, 100, 0))
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    out = np.asarray(paste(original, generated, mask, feather=6))
    assert (out[20:40, 20:40] == (200, 100, 0)).all()
    assert (out[:12] == (10, 20, 30)).all() and (out[:, 48:] == (10, 20, 30)).all()
    edge = out[30, 16]  # 4 px outside the mask: blended, between the two colours
    assert 10 < edge[0] < 200


def test_depth_map(tiny, store, upload):
    name = upload("chelsea.jpg")
    obs = Image2Depth()(name, store)
    depth = np.asarray(store.open(obs.image))
    assert "_depth_" in obs.image and depth.shape == (300, 451, 3)
    assert (depth[..., 0] == depth[..., 1]).all() and (depth[..., 1] == depth[..., 2]).all()  # grey
    assert depth.min() == 0 and depth.max() == 255  # min-max scaled, as the depth ControlNet expects


def test_normal_map(tiny, store, upload):
    name = upload("chelsea.jpg")
    obs = Image2Normal()(name, store)
    rgb = np.asarray(store.open(obs.image)).astype(np.float32)
    assert "_normal_" in obs.image and rgb.shape == (300, 451, 3)
    vectors = (rgb - 127.5) / 127.5
    assert np.median(np.abs(np.linalg.norm(vectors, axis=-1) - 1)) < 0.02  # unit normals
    assert (vectors[..., 2] > 0).all()  # every surface faces the camera


def test_depth_to_normal_on_a_tilted_plane():
    """A plane that comes closer towards the right, in front of a far background."""
    depth = np.full((40, 60), 1.0, np.float32)  # background: far (small inverse depth)
    x = np.arange(60, dtype=np.float32)
    depth[10:30, 10:50] = 100 + 10 * x[10:50]  # foreground ramp: 10 units per pixel
    normal = depth_to_normal(depth)
    assert normal.shape == (40, 60, 3) and normal.dtype == np.uint8
    assert tuple(normal[2, 2]) == (127, 127, 255)  # background treated as flat
    # Sobel of a unit ramp is 8 per unit slope: n = (80, 0, 2*pi) / |.|
    expected = np.array([80.0, 0.0, 2 * np.pi]) / np.linalg.norm([80.0, 0.0, 2 * np.pi]) * 127.5 + 127.5
    assert np.abs(normal[20, 30].astype(float) - expected).max() <= 1


def test_super_resolution(tiny, store, upload):
    name = upload("chelsea.jpg")
    tool = SuperResolution()
    assert tool.input_cap() == 128 and SuperResolution(device="cuda").input_cap() == 512
    obs = tool(name, store)
    assert "_sr_" in obs.image and store.open(obs.image).size == (256, 170)
    assert obs.text.endswith(
        "Upscaled x2 from 128x85 to 256x170 (the input was first shrunk from 451x300; the limit on cpu is 128 px)."
    )
    tool.max_input_side_cpu = 512
    obs = tool(name, store)
    assert store.open(obs.image).size == (902, 600) and obs.text.endswith("Upscaled x2 from 451x300 to 902x600.")


def test_cap_size():
    assert cap_size((451, 300), 512) == (451, 300)
    assert cap_size((1024, 512), 512) == (512, 256)
    assert cap_size((300, 3000), 512) == (51, 512)


def small_3d() -> Text2Asset3D:
    tool = Text2Asset3D()
    tool.steps, tool.frame_size, tool.ray_samples, tool.mesh_grid = 2, 32, (4, 4), 16
    return tool


def test_3d_asset_writes_a_mesh_and_a_preview(tiny, store):
    obs = small_3d()("a wooden chair", store)
    preview, mesh = names_in(obs.text)
    assert preview == obs.image and re.fullmatch(r"image/[a-z0-9]{4}_3d\.png", preview)
    assert store.open(preview).size == (64, 64)  # 2x2 views of 32 px
    data = (store.root / mesh).read_bytes()
    assert mesh.endswith("_3d.ply") and data.startswith(b"ply\n")
    vertices = int(re.search(rb"element vertex (\d+)", data).group(1))
    faces = int(re.search(rb"element face (\d+)", data).group(1))
    assert vertices > 0 and f"PLY, {vertices} vertices, {faces} faces" in obs.text
    assert store.names() == [preview]  # the mesh is not offered as an image
    with pytest.raises(ImageError):
        store.open(mesh)


def test_3d_asset_without_a_surface(tiny, store, monkeypatch):
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    def no_surface(self, *args, **kwargs):
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")

    monkeypatch.setattr(ShapERenderer, "decode_to_mesh", no_surface)
    obs = small_3d()("a cloud", store)
    assert obs.image and "no mesh file was written" in obs.text and ".ply" not in obs.text


def test_save_file(store, upload):
    source = upload("astronaut.jpg")
    name = store.save_file(b"solid x\n", source, "3d", ".STL")
    src_id = source.split("/")[1][:-4]
    assert re.fullmatch(rf"image/[a-z0-9]{{4}}_3d_{src_id}_{src_id}\.stl", name)
    assert (store.root / name).read_bytes() == b"solid x\n"
    with pytest.raises(ValueError):
        store.save_file(b"", None, "3d", "png")


# -- devices ---------------------------------------------------------------------------------------
def test_loaders_follow_the_device(tiny, monkeypatch):
    """With device "cuda:1" every loader moves its model there in half precision (the moves are
    recorded, not made: this machine has no GPU)."""
    import torch
    from diffusers import DiffusionPipeline, ModelMixin
    from transformers import PreTrainedModel

    from tools import asset3d, depth, edit, generate, upscale

    moves = []

    def record(self, *args, **kwargs):
        moves.append((type(self).__name__, args[0] if args else kwargs.get("device")))
        return self

    for cls in (DiffusionPipeline, ModelMixin, PreTrainedModel):
        monkeypatch.setattr(cls, "to", record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert all(cls(device="cuda:1").availability().ok for cls in (Text2Image, Image2Depth, SuperResolution))

    loaded = [
        generate.sd_base("cuda:1").unet,
        generate.controlnet("controlnet-depth", "cuda:1"),
        edit._load_pipeline("StableDiffusionInpaintPipeline", "sd-inpaint", "cuda:1").unet,
        depth._depth_model("cuda:1")[1],
        upscale._sr_model("cuda:1")[1],
        asset3d._shap_e("cuda:1").prior,
    ]
    assert all(m.dtype == torch.float16 for m in loaded)
    assert moves and all(device == "cuda:1" for _, device in moves)
    assert {"StableDiffusionPipeline", "ControlNetModel", "DPTForDepthEstimation"} <= {n for n, _ in moves}
    assert {
        "sd15@cuda:1",
        "controlnet-depth@cuda:1",
        "sd-inpaint@cuda:1",
        "dpt-depth@cuda:1",
        "swin2sr@cuda:1",
        "shap-e@cuda:1",
    } <= set(CACHE.keys())
