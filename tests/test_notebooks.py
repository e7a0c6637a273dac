"""The notebooks in notebooks/ run top to bottom, show their figures, write nothing
inside the repository, and are committed executed (with their outputs).

A *figure cell* is a code cell that draws (``plt.subplots(``, ``.view(``,
``view_landmarks(``, ``plot_cumulative_error_distribution(``, ...): it must produce an
``image/png`` output, both in the committed notebook and when re-executed with the
inline backend (``MPLBACKEND`` is removed for the kernel, as in Jupyter). Cells tagged
``needs-data`` draw only when ``../shared/data`` is present.
"""

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURE = re.compile(
    r"plt\.(subplots|figure|subplot|show)\(|\.view\(|view_landmarks\(|"
    r"plot_cumulative_error_distribution\(|dense_overlay_figure\("
)
DATA = Path(
    os.environ.get("MENPO_DENSEREG_DATA", ROOT / ".." / "shared" / "data")
).resolve()


def figure_cells(nb):
    """Indices of the figure cells that must show an image (see the module docstring)."""
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code" or not FIGURE.search(c.source):
            continue
        if "needs-data" in c.metadata.get("tags", []) and not DATA.is_dir():
            continue
        out.append(i)
    return out


def has_image(cell):
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


#: run first in the kernel (not saved): records files opened for writing, renamed or
#: created inside the repository (``__pycache__`` aside) with an audit hook
WATCH = """
import os as _os, sys as _sys
_REPO, _WRITES = {root!r}, []
_W = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_APPEND
def _watch(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or not ((mode and any(c in mode for c in "wax+"))
                                         or (flags and flags & _W)):
            return
    elif event in ("os.rename", "os.mkdir", "os.symlink", "shutil.copyfile"):
        path = args[1] if event in ("os.rename", "shutil.copyfile") else args[0]
    else:
        return
    try:
        p = _os.path.abspath(_os.fsdecode(path))
    except TypeError:
        return
    if p.startswith(_REPO + _os.sep) and "__pycache__" not in p:
        _WRITES.append(p)
_sys.addaudithook(_watch)
"""
REPORT = "import json as _json; print('REPO-WRITES', _json.dumps(sorted(set(_WRITES))))"


def test_figure_cells_are_found():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt"),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()"),
        nbformat.v4.new_code_cell("result.view()"),
    ]
    assert figure_cells(nb) == [1, 2]
    assert not has_image(nb.cells[1])
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})
    ]
    assert has_image(nb.cells[1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_its_figures(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name}: not executed"
    cells = figure_cells(nb)
    assert cells, f"{path.name}: no figure cell"
    missing = [i for i in cells if not has_image(nb.cells[i])]
    assert not missing, f"{path.name}: committed figure cells without image: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend
    monkeypatch.setenv("MENPO_DENSEREG_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    n = len(nb.cells)
    nb.cells = (
        [nbformat.v4.new_code_cell(WATCH.format(root=str(ROOT)))]
        + nb.cells
        + [nbformat.v4.new_code_cell(REPORT)]
    )
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    report = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    nb.cells = nb.cells[1 : n + 1]
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    missing = [i for i in figure_cells(nb) if not has_image(nb.cells[i])]
    assert not missing, f"{path.name}: figure cells without an image output: {missing}"
    written = json.loads(report.split("REPO-WRITES", 1)[1])
    assert not written, f"{path.name} wrote inside the repository: {written}"


def test_the_write_watch_sees_writes_inside_the_folder(tmp_path):
    """The audit hook the notebook test injects reports a write (so it can fail)."""
    import subprocess
    import sys

    code = (
        WATCH.format(root=str(tmp_path))
        + f"\nopen({str(tmp_path / 'a.txt')!r}, 'w').close()"
        + f"\nopen({str(tmp_path / 'a.txt')!r}).read()"
        + "\nimport tempfile, os"
        + f"\nfd, p = tempfile.mkstemp(dir={str(tmp_path)!r}); os.close(fd)"
        + f"\nos.replace(p, {str(tmp_path / 'b.txt')!r})"
        + "\nopen(os.path.join(tempfile.gettempdir(), 'elsewhere.txt'), 'w').close()\n"
        + REPORT
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    written = json.loads(out.stdout.split("REPO-WRITES", 1)[1])
    assert str(tmp_path / "a.txt") in written and str(tmp_path / "b.txt") in written
    assert not [w for w in written if "elsewhere" in w]
