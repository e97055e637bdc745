"""The theory notebook: it runs in its short mode, its losses are finite, the committed file keeps
the full run's outputs, and every line of the project's code that it quotes is still there."""

import ast
import json
import math
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "actor_critic_theory.ipynb")

# How the notebook's markdown links to the project's code: the file, the function (or Class.method),
# and a quoted line, `file.py`, `function`: `the quoted line`. The quote must be one whole line of
# that function's source, verbatim, without its indentation and without a trailing comment.
CITATION = re.compile(r"`(\w+\.py)`, `(\w+(?:\.\w+)?)`: `([^`\n]+)`")

# What each section reports in the summary's "losses".
SECTIONS = (
    "reinforce",
    "baseline",
    "gradient_variance",
    "actor_critic_per",
    "actor_critic_uniform",
    "sac",
    "ppo",
)


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def citations(notebook):
    """(file, function, quote) for every link in the notebook's markdown cells."""
    return [
        match.groups()
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for match in CITATION.finditer(cell.source)
    ]


def function_source_lines(path, name):
    """The source lines of the function `name` ("f" anywhere in the file, or "Class.method"), or None."""
    with open(path) as file:
        source = file.read()
    tree = ast.parse(source)
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    if "." in name:
        class_name, method = name.split(".")
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name]
        found = [n for c in classes for n in c.body if isinstance(n, functions) and n.name == method]
    else:
        found = [n for n in ast.walk(tree) if isinstance(n, functions) and n.name == name]
    if not found:
        return None
    lines = source.splitlines()
    return [line for node in found for line in lines[node.lineno - 1 : node.end_lineno]]


def quotable(line):
    """A source line as it may be quoted: stripped, and also without a trailing "  # comment"."""
    code = line.strip()
    return {code, code.split("  # ")[0].rstrip()}


def broken_citations(notebook, root=ROOT):
    """One message per link whose file, function or quoted line is gone."""
    broken = []
    for file_name, function, quote in citations(notebook):
        path = os.path.join(root, file_name)
        if not os.path.exists(path):
            broken.append(f"{file_name} does not exist (quoted: {quote})")
            continue
        lines = function_source_lines(path, function)
        if lines is None:
            broken.append(f"{file_name} has no function {function} (quoted: {quote})")
        elif not any(quote in quotable(line) for line in lines):
            broken.append(f"{file_name}, {function} has no line: {quote}")
    return broken


def summary_of(notebook):
    """The JSON that the notebook's last code cell ("summary") prints."""
    (cell,) = [cell for cell in notebook.cells if cell.get("id") == "summary"]
    text = "".join(output.get("text", "") for output in cell.outputs if output.get("output_type") == "stream")
    return json.loads(text)


def stream_text(notebook, cell_id):
    (cell,) = [cell for cell in notebook.cells if cell.get("id") == cell_id]
    return "".join(output.get("text", "") for output in cell.outputs if output.get("output_type") == "stream")


def test_every_quoted_line_is_in_the_function_it_names():
    notebook = read_notebook()
    cited = citations(notebook)
    assert len(cited) >= 20, f"only {len(cited)} links found: has the link format changed?"
    assert {file_name for file_name, _, _ in cited} == {"sac_continuous.py", "ppo_continuous.py"}
    assert {"update_critic", "update_actor", "train", "update", "advantages_and_returns"} <= {
        function for _, function, _ in cited
    }
    assert broken_citations(notebook) == []


def test_a_quote_that_no_longer_matches_is_caught():
    """The check above can fail: a changed quote, a cut-short one, a function or a file that is not there."""
    notebook = read_notebook()
    changes = {  # a quoted line as the notebook has it -> as if the code had changed
        "`td_target = rewards.flatten() + args.gamma * (1 - terminations.flatten()) * next_q`": (
            "`td_target = rewards.flatten() + gamma * (1 - terminations.flatten()) * next_q`"
        ),
        "`alpha = learner.log_alpha.exp().detach()`": "`alpha = learner.log_alpha.exp()`",
    }
    quoted = 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for original, changed in changes.items():
                quoted += cell.source.count(original)
                cell.source = cell.source.replace(original, changed)
    assert quoted >= len(changes)
    notebook.cells.append(
        nbformat.v4.new_markdown_cell(
            "`ppo_continuous.py`, `no_such_function`: `ratio = logratio.exp()` and "
            "`no_such_file.py`, `update`: `ratio = logratio.exp()`",
            id="altered",
        )
    )
    broken = broken_citations(notebook)
    assert sum("has no line: td_target = rewards.flatten() + gamma *" in message for message in broken) >= 1
    assert "sac_continuous.py, update has no line: alpha = learner.log_alpha.exp()" in broken
    assert any("has no function no_such_function" in message for message in broken)
    assert any("no_such_file.py does not exist" in message for message in broken)
    assert len(broken) == quoted + 2


def test_the_committed_notebook_keeps_its_full_run():
    """Its outputs are the full run's (not a short one's), with the "solved" lines and the curves."""
    assert os.path.getsize(NOTEBOOK) < 1_000_000
    notebook = read_notebook()
    summary = summary_of(notebook)
    assert summary["short"] is False and summary["finite"] is True
    assert all(steps is not None for steps in summary["numbers"]["per_solved_at"].values())
    assert stream_text(notebook, "per-run").count("solved CartPole-v1 (1000-step limit) after") == 3
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "data" in o]
    assert sum("image/png" in output["data"] for output in images) >= 4


# A cell without an id is a warning now and an error in later nbformat versions: keep every cell's.
@pytest.mark.filterwarnings("error::nbformat.warnings.MissingIDFieldWarning")
def test_the_theory_notebook_runs_in_short_mode(monkeypatch):
    monkeypatch.setenv("THEORY_NOTEBOOK_SHORT", "1")  # the kernel inherits it
    notebook = read_notebook()
    resources = {"metadata": {"path": os.path.dirname(NOTEBOOK)}}  # it runs from notebooks/
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    summary = summary_of(notebook)
    assert summary["short"] is True
    for section in SECTIONS:
        values = summary["losses"][section]
        assert values, f"{section} reported no losses"
        assert all(math.isfinite(value) for value in values), f"{section}: {values}"
    assert summary["finite"] is True
    # The prioritized memory was ordered by loss (short mode fills a small memory past 3/4).
    assert "the memory was ordered by loss 0 times" not in stream_text(notebook, "per-run")
    assert "ordered by loss" in stream_text(notebook, "per-run")
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "data" in o]
    assert sum("image/png" in output["data"] for output in images) >= 4
