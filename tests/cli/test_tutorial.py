"""docs/tutorial.md runs: its Python blocks are executed in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("nilearn", reason="the tutorial's demo data need nilearn")

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_tutorial_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "tutorial"}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{TUTORIAL.name}, block {number}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "71,987 parameters" in out
    assert (tmp_path / "compare.csv").is_file()
    assert (tmp_path / "run_model_0_0" / "report" / "report.html").is_file()
    assert (tmp_path / "segmented" / "new_scan_dseg.nii.gz").is_file()
    assert namespace["volumes"]["GM_ml"].iloc[0] > 0
    # the networks built by hand are listed under their Keras names
    assert list(namespace["table"]["model"]) == ["model_0_0", "model_0_0_dropout",
                                                 "model_0_0_dilated"]
    assert (namespace["table"]["parameters"] == 71987).all()
