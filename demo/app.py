"""The mmmask Gradio demo: open-vocabulary segmentation, click-to-segment and CM3 generation.

    mmmask demo [--host 127.0.0.1] [--port 7860] [--config-file F] [--weights W] [KEY VALUE ...]
    python demo/app.py [the same flags] [--cm3-config-file F] [--cm3-weights W]

With no flags it serves the shipped Shapes-OV models, offline. The app calls only the Predictor
layer (``SegmentationPredictor``, ``CM3Generator``, ``segment_then_edit``); the callbacks in
``callbacks.py`` only convert page inputs to those calls and results back to page outputs.
"""

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

import gradio as gr

HERE = Path(__file__).resolve().parent


def _load_sibling(name: str):
    """Import ``demo/<name>.py`` by path (this file is also loaded by path by ``mmmask demo``)."""
    key = f"mmmask_demo_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


cb = _load_sibling("callbacks")
image_input = _load_sibling("components").image_input

__all__ = ["build_demo", "start", "launch", "main", "DemoModels"]

DemoModels = cb.DemoModels
MAX_UPLOAD = "10mb"  # larger uploads are refused by the server with a message in the page
CONCURRENCY = 2  # requests processed at once (the models themselves take turns)
QUEUE_SIZE = 128  # waiting requests beyond this are refused ("queue full")

TITLE = ("# mmmask\nOpen-vocabulary segmentation (PMP / SAM masks named by Mask-Adapter and "
         "mask crops) and "
         "causal-masked generation (CM3). Vocabulary syntax: `,` between classes, `|` between "
         "synonyms, e.g. `red star|red starfish, sky, grass|lawn`.")


def _segment_tab(app, vocab):
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input("Image", "seg-image", 320)
            if cb.EXAMPLES:
                gr.Examples([[str(p)] for p in cb.EXAMPLES], inputs=[image],
                            label="Shapes-OV examples", examples_per_page=8)
            task = gr.Radio(list(cb.TASKS), value="semantic", label="Task", elem_id="seg-task")
            generator = gr.Radio([("PMP (prompt-guided proposals)", "pmp"),
                                  ("SAM (automatic masks)", "sam")], value="pmp",
                                 label="Mask generator", elem_id="seg-generator")
            threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Score threshold",
                                  elem_id="seg-threshold")
            run = gr.Button("Segment", variant="primary", elem_id="seg-run")
        with gr.Column(scale=1):
            output = gr.AnnotatedImage(label="Segments", elem_id="seg-output", height=360)
            status = gr.Markdown(elem_id="seg-status")
            table = gr.Dataframe(headers=list(cb.TABLE_COLUMNS), label="Segments table",
                                 interactive=False, elem_id="seg-table")
            download = gr.File(label="Result JSON (mmmask segment format)", elem_id="seg-json")
    run.click(app.segment, [image, vocab, task, generator, threshold],
              [output, table, download, status], api_name="segment")


def _click_tab(app, vocab):
    state = gr.State(cb.empty_prompts())
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input("Image: click to prompt SAM", "click-image", 320)
            mode = gr.Radio([("Positive point", "positive"), ("Negative point", "negative"),
                             ("Box (two corners)", "box")], value="positive",
                            label="Click adds", elem_id="click-mode")
            clear = gr.Button("Clear prompts", elem_id="click-clear")
            if cb.EXAMPLES:
                gr.Examples([[str(p)] for p in cb.EXAMPLES], inputs=[image],
                            label="Shapes-OV examples", examples_per_page=8)
        with gr.Column(scale=1):
            output = gr.AnnotatedImage(label="SAM mask, named by the classifier",
                                       elem_id="click-output", height=360)
            status = gr.Markdown(elem_id="click-status")
            table = gr.Dataframe(headers=["label", "probability"], label="Best names",
                                 interactive=False, elem_id="click-table")
    outputs = [output, table, status, state]
    image.select(app.click, [image, state, mode, vocab], outputs, api_name=False)
    image.upload(cb.reset_prompts, None, outputs, api_name=False, queue=False)
    clear.click(cb.reset_prompts, None, outputs, api_name=False, queue=False)


def _generate_tab(app, vocab):
    corner = gr.State(None)
    gr.Markdown(app.generator_note(), elem_id="gen-note")
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input("Image (caption / infill; click two corners for a box)",
                                "gen-image", 280)
            if cb.EXAMPLES:
                gr.Examples([[str(p)] for p in cb.EXAMPLES], inputs=[image],
                            label="Shapes-OV examples", examples_per_page=8)
            cap_run = gr.Button("Caption the image", elem_id="gen-caption-run")
            caption = gr.Textbox(label="Caption", interactive=False, elem_id="gen-caption")
            with gr.Group():
                region = gr.Radio([("Box", "box"), ("Label from the vocabulary", "label")],
                                  value="box", label="Infill region", elem_id="gen-region")
                box = gr.Textbox(label="Box x0,y0,x1,y1 (pixels)", value="64,64,192,192",
                                 elem_id="gen-box")
                label = gr.Dropdown(choices=app.vocab_labels(app.default_vocab_text),
                                    label="Label (segment-then-edit)", allow_custom_value=True,
                                    elem_id="gen-label")
                infill_prompt = gr.Textbox(label="Infill prompt", value="a yellow star",
                                           elem_id="gen-infill-prompt")
                infill_run = gr.Button("Infill the region", elem_id="gen-infill-run")
        with gr.Column(scale=1):
            text = gr.Textbox(label="Text to image", value="a red star on grass",
                              elem_id="gen-text")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="gen-seed")
            t2i_run = gr.Button("Generate image", variant="primary", elem_id="gen-t2i-run")
            output = gr.Image(label="Generated / infilled image", interactive=False,
                              elem_id="gen-output", height=280, format="png")
            info = gr.Markdown(elem_id="gen-info")
    cap_run.click(app.caption, [image, seed], [caption, info], api_name="caption")
    t2i_run.click(app.text_to_image, [text, seed], [output, info], api_name="text_to_image")
    infill_run.click(app.infill, [image, region, box, label, infill_prompt, seed],
                     [output, info], api_name="infill")
    image.select(cb.box_corner, [corner, box], [corner, box, region], api_name=False,
                 queue=False)
    vocab.change(app.label_choices, [vocab, label], [label], api_name=False, queue=False,
                 show_progress="hidden")


def build_demo(models: "cb.DemoModels") -> gr.Blocks:
    """The three-tab page over loaded models (nothing is launched)."""
    app = cb.DemoCallbacks(models)
    presets = app.presets()
    with gr.Blocks(title="mmmask demo", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(TITLE)
        with gr.Row():
            vocab = gr.Textbox(value=app.default_vocab_text, label="Vocabulary", lines=2,
                               max_lines=6, scale=4, elem_id="vocab")
            preset = gr.Dropdown(choices=list(presets), value=None, label="Preset vocabulary",
                                 scale=1, elem_id="vocab-preset")
        preset.change(lambda name: presets.get(name, gr.skip()), [preset], [vocab],
                      api_name=False, queue=False)
        with gr.Tabs():
            with gr.Tab("Segment", id="segment"):
                _segment_tab(app, vocab)
            with gr.Tab("Click", id="click"):
                _click_tab(app, vocab)
            with gr.Tab("Generate", id="generate"):
                _generate_tab(app, vocab)
    demo.mmmask_callbacks = app
    return demo


def start(models: "cb.DemoModels", host: str = "127.0.0.1", port: int | None = None,
          concurrency: int = CONCURRENCY, quiet: bool = True) -> tuple[gr.Blocks, str]:
    """Build and serve the demo in background threads; returns (blocks, url). ``close()``
    the blocks to stop."""
    demo = build_demo(models)
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    _, url, _ = demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD,
                            prevent_thread_lock=True, quiet=quiet, ssr_mode=False,
                            show_error=False, footer_links=["api"])
    return demo, url.rstrip("/")


def launch(host: str = "127.0.0.1", port: int = 7860, config_file: str | None = None,
           weights: str | None = None, opts: list | None = None, device: str | None = None,
           cm3_config_file: str | None = None, cm3_weights: str | None = None,
           cm3_opts: list | None = None, concurrency: int = CONCURRENCY) -> int:
    """Load the models (default: the shipped ones), serve the demo and block until Ctrl-C."""
    models = cb.DemoModels.load(config_file, weights, opts, device, cm3_config_file,
                                cm3_weights, cm3_opts)
    demo, url = start(models, host, port, concurrency, quiet=False)
    print(f"mmmask demo serving at {url} (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
        models.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    from mmmask.cli import add_cm3_demo_args, run_guarded, split_opts

    p = argparse.ArgumentParser(description="The mmmask Gradio demo (trailing KEY VALUE pairs "
                                            "override segmentation config keys).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--config-file", default=None, help="segmentation config (default: shipped)")
    p.add_argument("--weights", default=None, help="segmentation weights (overrides MODEL.WEIGHTS)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: MODEL.DEVICE)")
    add_cm3_demo_args(p)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help="requests processed at once")
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, opts = split_opts(argv)
    args = p.parse_args(argv)
    return run_guarded(lambda: launch(args.host, args.port, args.config_file, args.weights, opts,
                                      args.device, args.cm3_config_file, args.cm3_weights,
                                      shlex.split(args.cm3_opts), args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
