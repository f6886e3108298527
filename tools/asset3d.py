"""Text to 3D with Shap-E (diffusers), from checkpoints/shap-e.

The prior turns the text into a latent once; the renderer then decodes that latent twice:
into a coloured triangle mesh (marching cubes over a `mesh_grid`^3 signed-distance grid),
saved as a .ply file in the conversation folder, and into 4 rendered views tiled 2x2 as the
tool's image result, so the chat can show what the mesh looks like.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from gpt4tools.hardware import tool_dtype
from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, ToolResult, ToolSpec
from tools._torch import TorchTool, cached, checkpoint, seeded

SHAP_E_FP32_MB = 2600  # prior 0.3B + CLIP text encoder 0.1B + renderer projections 0.2B parameters
VIEWS = (0, 5, 10, 15)  # of the renderer's 20 views around the object: front, sides, back

# The renderer writes each latent's weights into its own MLP before decoding, so two
# decodes at once would mix objects: they take turns.
_render_lock = threading.Lock()


def _shap_e(device: str) -> Any:
    def load() -> Any:
        from diffusers import ShapEPipeline

        pipe = ShapEPipeline.from_pretrained(checkpoint("shap-e"), dtype=tool_dtype(device), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    return cached("shap-e", device, load, SHAP_E_FP32_MB)


def tile(views: np.ndarray) -> Image.Image:
    """Four HxWx3 float (0..1) views as one 2Hx2W RGB image."""
    u8 = (np.clip(views, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    top = np.concatenate([u8[0], u8[1]], axis=1)
    bottom = np.concatenate([u8[2], u8[3]], axis=1)
    return Image.fromarray(np.concatenate([top, bottom], axis=0), "RGB")


def ply_bytes(mesh: Any) -> bytes:
    """The mesh as a binary PLY with vertex colours (diffusers' exporter writes to a path)."""
    from diffusers.utils import export_to_ply

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        export_to_ply(mesh, str(path))
        return path.read_bytes()


class Text2Asset3D(TorchTool):
    spec = ToolSpec(
        name="Generate 3D Asset From User Input Text",
        description=(
            "useful when you want to create a 3D model (a mesh) of an object from a text description. like: "
            "generate a 3D model of a chair, or make a 3D asset of a birthday cake, or create a 3D shape of an airplane"
        ),
        args=(Arg("text"),),
        output="image",
        slug="3d",
        asked_as=(r"\b3-?d\s+(?:model|asset|mesh|object|shape|version|print|render)s?\b", r"\bmesh(?:es)?\b"),
        seen=False,
        aliases=("Generate 3D Asset From Text", "Text to 3D"),
        paraphrases=(
            (
                "use this to build a three-dimensional object from what the user describes, like: make a 3D teapot, "
                "or create a 3D model of a shoe"
            ),
            (
                "helpful for turning a text description into a 3D mesh file with a preview, like: generate a "
                "3D car, or model a lamp in 3D"
            ),
        ),
    )
    model = "Shap-E (diffusers)"
    learned = True
    weights = ("shap-e",)
    packages = ("torch", "diffusers", "transformers")
    memory_mb = SHAP_E_FP32_MB
    steps: ClassVar[int] = 64  # Shap-E's recommended prior steps
    guidance_scale: ClassVar[float] = 15.0  # Shap-E's recommended text guidance
    seed: ClassVar[int] = 42
    # Pixels per rendered view (the preview is 2x this). A multiple of 32: diffusers renders
    # rays in batches of 4096 and silently drops a remainder, which then fails a reshape.
    frame_size: ClassVar[int] = 128
    ray_samples: ClassVar[tuple[int, int]] = (64, 128)  # coarse and fine NeRF samples per ray
    mesh_grid: ClassVar[int] = 128  # marching-cubes resolution (Shap-E's default)

    def run(self, store: ImageStore, text: str) -> ToolResult:
        if self.frame_size % 32:
            raise ValueError(f"frame_size must be a multiple of 32, not {self.frame_size}")
        pipe = _shap_e(self.device)
        latents = pipe(
            text,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            output_type="latent",
            generator=seeded(self.seed),
        ).images
        latent = latents[0][None]
        renderer, device = pipe.shap_e_renderer, pipe.device
        with _render_lock:
            views = renderer.decode_to_image(
                latent,
                device,
                size=self.frame_size,
                n_coarse_samples=self.ray_samples[0],
                n_fine_samples=self.ray_samples[1],
            )
            try:
                mesh = renderer.decode_to_mesh(latent, device, grid_size=self.mesh_grid)
            except ValueError:  # diffusers fails this way when marching cubes finds no surface at all
                mesh = None
        preview = tile(views[list(VIEWS)].float().cpu().numpy())
        if mesh is None or len(mesh.verts) == 0:
            return ToolResult(
                image=preview,
                text="Shap-E produced no closed surface for this text, so no mesh file was written; "
                "the image shows 4 rendered views.",
            )
        mesh_name = store.save_file(ply_bytes(mesh), None, self.spec.slug, "ply")
        return ToolResult(
            image=preview,
            text=f"3D mesh saved as {mesh_name} (PLY, {len(mesh.verts)} vertices, {len(mesh.faces)} faces); "
            "the image shows it from 4 sides.",
        )
