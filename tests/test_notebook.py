"""notebooks/evaluation.ipynb runs top to bottom on a tiny run folder (nbclient, a real ipykernel)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.helpers.runs import make_run, make_test_set  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "evaluation.ipynb"


def _untrained_checkpoint(path: str) -> str:
    """A synthgap checkpoint of an untrained fasterrcnn_small_gn (GroupNorm: its features already vary)."""
    import torch

    from synthgap.models.checkpoint import make_checkpoint, save_checkpoint
    from synthgap.config import load_config
    from synthgap.models import build_model

    torch.manual_seed(0)
    cfg = load_config("cpu_small")
    cfg.model.name = "fasterrcnn_small_gn"
    save_checkpoint(make_checkpoint(model=build_model(cfg.model, 4), epoch=0, step=0, config=cfg.to_dict(),
                                    label_map={1: "a", 2: "b", 3: "c"}), path)
    return path


def test_evaluation_notebook_executes(tmp_path, monkeypatch):
    test = make_test_set(str(tmp_path / "test"), frames=2)
    run_dir = make_run(str(tmp_path / "run"), test, keep=0.8, seed=0, name="nb-run")
    info = json.load(open(os.path.join(run_dir, "run.json")))  # as a study writes it: the model and its train data
    info.update(checkpoint=_untrained_checkpoint(str(tmp_path / "model.pt")), train_data=test)
    open(os.path.join(run_dir, "run.json"), "w").write(json.dumps(info))
    monkeypatch.setenv("SYNTHGAP_RUN_DIR", run_dir)
    monkeypatch.setenv("SYNTHGAP_FEATURE_IMAGES", "2")
    monkeypatch.delenv("SYNTHGAP_TEST_DATA", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "nb-run | " in text and "2 test images" in text
    coco = json.load(open(os.path.join(run_dir, "metrics_coco.json")))["stats"]
    assert f"'AP': {round(coco['AP'], 4)}" in text
    assert "AP@0.5 = " + str(round(coco["AP50"], 4)) in text  # re-scoring at IoU 0.5 agrees with the file
    assert "errors: most lost AP is " in text or "errors: no AP lost" in text  # the TIDE breakdown cell
    assert "AP by object attribute:" in text and "occlusion  >=90%" in text  # generated data: visible pixels
    line = next(x for x in text.splitlines() if x.startswith("feature distance train -> test | images "))
    assert abs(float(line.split()[7])) < 1e-6  # train data = test data here: distance 0
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 2 + 2  # PR + per-class (+ curves) and the 2 gallery images
    html = [o for o in outputs if o.output_type == "display_data" and "text/html" in o.get("data", {})]
    assert html and "nb-run" in html[0]["data"]["text/html"]
    assert any('id="feature-gap"' in o["data"]["text/html"] for o in html)
