"""Run a notebook through a real Jupyter kernel (ipykernel) with nbclient, as Jupyter runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


def run_notebook(cells: list[str], folder: Path) -> list[Any]:
    """Execute ``cells`` in a new kernel started in ``folder``; return each cell's outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    # the kernel inherits this test's isolated CLUSTRIX_CONFIG and CLUSTRIX_DATA_DIR
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute(
        env=dict(os.environ)
    )
    return [cell.outputs for cell in notebook.cells]


def cell_text(outputs: list[Any]) -> str:
    """A cell's printed text and displayed data, as one string."""
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(json.dumps(output["data"]))
    return "".join(parts)
