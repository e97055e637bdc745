"""The walk-through notebook runs from top to bottom, with a tiny training budget."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


# A cell without an id is a warning now and an error in later nbformat versions: keep every cell's.
@pytest.mark.filterwarnings("error::nbformat.warnings.MissingIDFieldWarning")
def test_the_walkthrough_notebook_runs(monkeypatch):
    monkeypatch.setenv("NOTEBOOK_STEPS", "2048")  # the kernel inherits it
    notebook = nbformat.read(os.path.join(NOTEBOOKS, "walkthrough.ipynb"), as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert '"global_step": 2048' in text  # it trained, to the budget
    images = [output for output in outputs if "data" in output]
    assert any("image/png" in output["data"] for output in images)  # its learning curve
    assert any("image/gif" in output["data"] for output in images)  # its agent
