"""Page components of the demo (a module of its own: Gradio inspects a component's module, so
it must be importable, which ``demo/app.py`` loaded by path is not)."""

import gradio as gr

__all__ = ["SegmentImage", "image_input"]


class SegmentImage(gr.Image):
    """An image input that hands the uploaded file's path to the callback unopened, so that
    unreadable uploads are reported by ``mmmask.data.image_io.read_image`` with a clear message
    (the stock component fails inside Gradio with no message)."""

    is_template = True  # rendered by the stock Image frontend (keep gr.Image's __init__: its
    # signature is the component's config)

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None:  # a data URL (pasted image): let Gradio decode it
            return super().preprocess(payload)
        return str(payload.path)


def image_input(label: str, elem_id: str, height: int) -> SegmentImage:
    return SegmentImage(label=label, elem_id=elem_id, height=height, type="filepath",
                        image_mode=None, sources=["upload", "clipboard"])
