"""Small real tools for testing the loop and the UI without model weights."""

from PIL import Image, ImageOps

from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec


class Invert(Tool):
    spec = ToolSpec(name="Invert The Image", description="useful to invert colours.",
                    args=(Arg("image_path", "image"),), output="image", slug="invert")
    model = "PIL ImageOps.invert (test tool)"

    def run(self, store, image_path):
        return ToolResult(image=ImageOps.invert(image_path))


class Ask(Tool):
    spec = ToolSpec(name="Ask", description="useful to ask about size.", args=(Arg("image_path", "image"), Arg("question")),
                    output="text", slug="ask", aliases=("Ask Something",))

    def run(self, store, image_path, question):
        return ToolResult(text=f"The image is {image_path.width}x{image_path.height} pixels.")


class Crash(Tool):
    spec = ToolSpec(name="Crash", description="always fails.", args=(Arg("text"),), output="text", slug="crash")

    def run(self, store, text):
        raise ZeroDivisionError("boom")


class Missing(Tool):
    spec = ToolSpec(name="Missing", description="needs weights nobody fetched.", args=(Arg("text"),), output="text", slug="m")
    weights = ("no-such-weights",)

    def run(self, store, text):
        raise AssertionError("never runs")
