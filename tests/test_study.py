"""synthgap.study: the typed study config, subsets, the summary, and (slow) a whole tiny study end to end."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.config import ConfigError
from synthgap.study import (cell_names, fraction_tag, load_study_config, real_data, real_subset, run_study,
                            study_config_from_dict)

DATA = {"synthetic": "syn", "real_train": "rt", "real_test": "rs"}


def test_config_defaults_and_cells():
    cfg = study_config_from_dict({"datasets": DATA})
    assert cfg.fractions == [0.1, 0.5, 1.0] and cfg.seeds == [47]
    assert cell_names(cfg) == ["synthetic", "real", "finetune-10", "finetune-50", "finetune-100"]
    assert cfg.train_cfg("finetune", 3).optimizer.lr == pytest.approx(2e-5)
    assert cfg.train_cfg("real", 3).train.seed == 3
    assert [fraction_tag(f) for f in (0.1, 0.05, 0.125, 1.0)] == ["10", "5", "12.5", "100"]


@pytest.mark.parametrize("raw, message", [
    ({"datasets": DATA, "fractions": [0.0]}, "fractions[0] must be in (0, 1]"),
    ({"datasets": DATA, "fractions": [0.1, 0.1]}, "duplicates"),
    ({"datasets": DATA, "seeds": []}, "seeds must be"),
    ({"datasets": {"synthetic": "s", "real_train": "r"}}, "datasets.real_test is required"),
    ({"datasets": {"real_train": "r", "real_test": "t"}}, "datasets.synthetic is required"),
    ({"datasets": DATA, "cells": ["synthetic", "oops"]}, "cells[1] must be one of"),
    ({"datasets": DATA, "fractoins": [0.5]}, "unknown key 'fractoins'"),
    ({"datasets": DATA, "seeds": ["a"]}, "seeds[0] must be an integer"),
    ({"datasets": DATA, "overrides": ["train.epochz=1"]}, "unknown key 'train.epochz'"),
])
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as e:
        study_config_from_dict(raw, "study.yaml")
    assert message in str(e.value) and "study.yaml" in str(e.value)


def test_real_only_study_needs_no_synthetic_data():
    cfg = study_config_from_dict({"datasets": {"real_train": "r", "real_test": "t"}, "cells": ["real"]})
    assert cell_names(cfg) == ["real"]


def test_yaml_file_and_nested_subsets(tmp_path):
    from synthgap.data import open_dataset
    from synthgap.generate import generate

    real = str(tmp_path / "real")
    generate(real, 10, format="coco", seed=0, width=64, height=48, style="target", progress=False)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"datasets": {**DATA, "real_train": real}, "fractions": [0.2, 0.5]}))
    cfg = load_study_config(str(path))
    small, half = (open_dataset(real_subset(cfg, f, str(tmp_path / "out"))) for f in (0.2, 0.5))
    assert (len(small), len(half)) == (2, 5)
    ids = lambda ds: {s.image_id for s in ds}  # noqa: E731
    assert ids(small) <= ids(half)  # 20 % is inside 50 %: one fixed random order
    full = {s.image_id: s for s in open_dataset(real)}
    for s in half:  # the subset references the original images and keeps their boxes exactly
        assert os.path.isabs(s.image) and (s.boxes == full[s.image_id].boxes).all()


def _groceries_real(root, n=10):
    """A tiny UnityGroceries-Real folder (v3 layout, no split files: the reader makes 60/20/20 splits)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (40, 30)).save(root / "images" / f"IMG_{i}.JPG", format="JPEG")
        records.append({"file_name": f"IMG_{i}.JPG", "annotations": [{"label_id": 1 + i % 2, "bbox": [1, 2, 10, 8]}]})
    (root / "annotations.json").write_text(json.dumps(records))
    spec = [{"label_id": 1, "label_name": "a"}, {"label_id": 2, "label_name": "b"}]
    (root / "annotation_definitions.json").write_text(json.dumps({"annotation_definitions": [
        {"id": "box", "name": "bounding box", "format": "JSON", "spec": spec}]}))
    return str(root)


def test_groceries_real_splits_become_coco_files(tmp_path):
    from synthgap.data import open_dataset

    real = _groceries_real(tmp_path / "gr")
    cfg = study_config_from_dict({"datasets": {"synthetic": "s", "real_train": real, "real_test": real,
                                               "real_format": "groceries-real", "real_train_split": "train",
                                               "real_test_split": "test"}, "fractions": [0.5]})
    out = str(tmp_path / "out")
    for which, split in (("train", "train"), ("test", "test")):
        path, fmt = real_data(cfg, which, out)
        expected = open_dataset(real, "groceries-real", split=split)
        got = open_dataset(path, fmt)
        assert fmt == "coco" and sorted(s.image_id for s in got) == sorted(s.image_id for s in expected)
    half = open_dataset(real_subset(cfg, 0.5, out))
    train_ids = {s.image_id for s in open_dataset(real, "groceries-real", split="train")}
    assert len(half) == 3 and {s.image_id for s in half} <= train_ids  # 50 % of the 6 training images


def test_cli_study_bad_config(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("datasets: {synthetic: a}\nseeds: [1, 1]\n")
    res = CliRunner().invoke(main, ["study", "--config", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "s.yaml" in res.output


TINY_OVERRIDES = ["train.epochs=1", "train.batch_size=4", "eval.batch_size=4", "data.image_size=[128, 96]",
                  "model.min_size=96", "model.max_size=128", "model.rpn_pre_nms_top_n_test=100",
                  "model.rpn_post_nms_top_n_test=50", "model.box_detections_per_img=20", "train.log_every=1"]


@pytest.mark.slow
def test_tiny_study_end_to_end_and_skip_on_rerun(tmp_path):
    from synthgap.generate import generate

    for name, style, frames, seed in (("syn", "synthetic", 4, 0), ("real_train", "target", 4, 1),
                                      ("real_test", "target", 2, 2)):
        generate(str(tmp_path / name), frames, format="coco", seed=seed, width=128, height=96, style=style,
                 progress=False)
    cfg = study_config_from_dict({
        "name": "tiny study", "fractions": [1.0], "seeds": [5], "gallery_images": 1, "overrides": TINY_OVERRIDES,
        "datasets": {"synthetic": str(tmp_path / "syn"), "real_train": str(tmp_path / "real_train"),
                     "real_test": str(tmp_path / "real_test")}})
    out = tmp_path / "out"
    report = run_study(cfg, str(out))
    cells = ["synthetic", "real", "finetune-100"]
    for cell in cells:
        folder = out / "cells" / cell / "seed5"
        doc = json.loads((folder / "metrics.json").read_text())
        assert doc["cell"] == cell and set(doc["metrics"]) == {"coco", "unity"}
        assert doc["train"]["epochs"] == 1 and doc["test_data"] == str(tmp_path / "real_test")
        for name in ("predictions.json", "metrics_coco.json", "metrics_unity.json", "run.json",
                     "checkpoints/FasterRCNN.last.estimator"):
            assert (folder / name).exists(), name
        assert any("tfevents" in f for f in os.listdir(folder / "tb"))
    ft = json.loads((out / "cells" / "finetune-100" / "seed5" / "run.json").read_text())
    assert ft["start_from"].endswith(os.path.join("synthetic", "seed5", "checkpoints", "FasterRCNN.last.estimator"))
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == cells and summary["rows"][0]["seeds"] == 1
    text = open(report, encoding="utf-8").read()
    assert "tiny study" in text and 'id="study-summary"' in text
    stats = json.loads((out / "stats" / "stats.json").read_text())  # the data gap section
    assert list(stats["datasets"]) == ["synthetic", "real train", "real test"] and 'id="data-gap"' in text
    assert text.count('class="run-row"') == 3 and text.count('class="gallery-image"') == 3
    for cell in cells:
        assert f'data-run="{cell} seed5"' in text

    # rerun: every cell finished -> nothing retrained; a cell without metrics.json is redone (resumed)
    marker = {c: (out / "cells" / c / "seed5" / "metrics.json").stat().st_mtime_ns for c in cells}
    ckpt = out / "cells" / "synthetic" / "seed5" / "checkpoints" / "FasterRCNN.last.estimator"
    ckpt_time = ckpt.stat().st_mtime_ns
    (out / "cells" / "real" / "seed5" / "metrics.json").unlink()
    run_study(cfg, str(out))
    assert ckpt.stat().st_mtime_ns == ckpt_time
    for c in ("synthetic", "finetune-100"):
        assert (out / "cells" / c / "seed5" / "metrics.json").stat().st_mtime_ns == marker[c]
    assert (out / "cells" / "real" / "seed5" / "metrics.json").exists()


def test_finished_cells_are_not_rerun_and_seeds_are_averaged(tmp_path, caplog):
    """Cells whose metrics.json exists are skipped (nothing here could train: the training data do not
    exist); the summary averages the seeds; a changed config is warned about."""
    from report.runs import make_run, make_test_set

    from synthgap.study import cell_dir

    test = make_test_set(str(tmp_path / "test"), frames=2)
    raw = {"name": "done study", "datasets": {"synthetic": str(tmp_path / "missing"), "real_test": test},
           "cells": ["synthetic"], "seeds": [1, 2], "data_stats": False, "gallery_images": 1}
    cfg = study_config_from_dict(raw)
    out = tmp_path / "out"
    for seed, ap in ((1, 0.2), (2, 0.4)):
        folder = cell_dir(str(out), "synthetic", seed)
        make_run(folder, test, keep=0.5, seed=seed, name=f"synthetic seed{seed}")
        (out / "cells" / "synthetic" / f"seed{seed}" / "metrics.json").write_text(json.dumps(
            {"cell": "synthetic", "seed": seed, "metrics": {"coco": {"AP": ap}, "unity": {"mAP": ap / 2}}}))
    report = run_study(cfg, str(out))
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["rows"]
    assert row["seeds"] == 2 and row["coco AP"]["mean"] == pytest.approx(0.3)
    assert row["coco AP"]["std"] == pytest.approx(0.1414213, rel=1e-5)  # sample std of 0.2, 0.4
    assert row["unity mAP"]["mean"] == pytest.approx(0.15)
    text = open(report, encoding="utf-8").read()
    assert "0.3000 &plusmn; 0.1414" in text and text.count('class="run-row"') == 2
    caplog.set_level("WARNING", logger="synthgap.study")
    run_study(study_config_from_dict({**raw, "gallery_images": 0}), str(out))
    assert "study config changed" in caplog.text
