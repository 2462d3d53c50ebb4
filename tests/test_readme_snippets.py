"""The README's Python snippet under "Use" runs as written (on a Shapes-OV scene as photo.png)."""

import re
from pathlib import Path

from PIL import Image

from mmmask.data import shapes

ROOT = Path(__file__).resolve().parents[1]


def _use_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    use = text[text.index("## Use"):text.index("## Demo")]
    blocks = re.findall(r"```python\n(.*?)```", use, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_use_snippet_runs(tmp_path, monkeypatch, capsys):
    Image.fromarray(shapes.render_sample(0, "test", 0, 128).image).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_use_snippet(), "README.md", "exec"), scope)
    assert scope["probs"].shape == (len(scope["masks"]), 3)
    assert scope["emb"].shape[0] == 2
    assert capsys.readouterr().out.strip()
