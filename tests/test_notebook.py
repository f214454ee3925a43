"""notebooks/quickstart.ipynb executes top to bottom (nbclient), so the tour never rots."""
import os

import nbformat
from conftest import ROOT
from nbclient import NotebookClient


def test_quickstart_notebook_runs(monkeypatch):
    path = ROOT / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    # the kernel imports clipprompt from this checkout (never pip-installed)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    for needle in ("EmptyPromptError", "tokens", "hit_rate", "R@1", "80 "):
        assert needle in text, needle
    assert any("image/png" in o.get("data", {}) for o in outs)  # the strategy plot
