"""The Adult notebook runs in a real Jupyter kernel and shows progress and a metrics table."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "adult_classification.ipynb"


def _outputs(notebook):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            yield cell, output


@pytest.mark.slow
def test_adult_notebook_shows_a_progress_bar_and_an_epoch_table(tmp_path, monkeypatch):
    monkeypatch.setenv("TABEMBED_FAST", "1")
    monkeypatch.setenv("TABEMBED_OUTPUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for _, o in _outputs(notebook) if o.output_type == "error"]
    assert not errors, errors
    streams = "".join(o.get("text", "") for _, o in _outputs(notebook)
                      if o.output_type == "stream")
    html = "".join(o.get("data", {}).get("text/html", "") for _, o in _outputs(notebook)
                   if o.output_type in ("display_data", "update_display_data",
                                        "execute_result"))
    # A text progress bar (ipywidgets is not installed here) ...
    assert "LR finder" in streams and "epoch 2/2: 100%|" in streams
    # ... the learning rate chosen, and the per-epoch table as HTML, updated in place.
    assert "learning rate" in streams and "'minimum' suggestion" in streams
    assert "<table" in html and "valid_loss" in html and "auc" in html
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "adult_lr_finder.png", "adult_history.png", "adult_sgdr_schedule.png"}
    images = [o for _, o in _outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 3
