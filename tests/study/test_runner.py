"""synthgap.study: the typed study config, splits and subsets, the in-domain check, the per-budget
comparison and its interval, the summary/report, and (slow) a whole tiny study end to end."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import yaml
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.config import ConfigError
from synthgap.report import write_study_report
from synthgap.study import (HEADLINE, NOT_LEARNED, cell_dir, cell_names, epochs_for_steps, format_summary,
                            fraction_tag, holdout_split, load_study_config, read_summary, real_data,
                            real_pool_and_val, real_subset, run_study, study_config_from_dict, synthetic_split)

AP = ("coco", "AP")

DATA = {"synthetic": "syn", "real_train": "rt", "real_test": "rs"}


def test_config_defaults_and_cells():
    cfg = study_config_from_dict({"datasets": DATA})
    assert cfg.fractions == [0.1, 0.5, 1.0] and cfg.seeds == [47] and cfg.in_domain_floor == 0.2
    assert cell_names(cfg) == ["synthetic", "real-10", "finetune-10", "real-50", "finetune-50", "real-100",
                               "finetune-100"]
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
    ({"datasets": DATA, "synthetic_holdout": 0.0}, "synthetic_holdout must be in (0, 1)"),
    ({"datasets": DATA, "real_holdout": 1.0}, "real_holdout must be in (0, 1)"),
    ({"datasets": DATA, "in_domain_floor": 2}, "in_domain_floor must be in [0, 1]"),
    ({"datasets": DATA, "real_steps": -1}, "real_steps must be >= 0"),
])
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as e:
        study_config_from_dict(raw, "study.yaml")
    assert message in str(e.value) and "study.yaml" in str(e.value)


def test_seeds_side_by_side_report_a_failing_cell_with_its_seed(tmp_path):
    """`jobs: 2` runs each seed in its own spawned process; the shared subsets are written first, by the
    parent; a cell that fails in a worker stops the study with the seed and the error (here: a finetune
    cell without its synthetic cell, which fails before any training)."""
    from synthgap.errors import SynthgapError
    from synthgap.generate import generate

    real, test = str(tmp_path / "real"), str(tmp_path / "test")
    generate(real, 10, format="coco", seed=0, width=64, height=48, style="target", progress=False)
    generate(test, 3, format="coco", seed=1, width=64, height=48, style="target", progress=False)
    cfg = study_config_from_dict({"datasets": {"synthetic": real, "real_train": real, "real_test": test},
                                  "cells": ["finetune"], "fractions": [0.5], "seeds": [3, 4], "jobs": 2,
                                  "data_stats": False})
    out = tmp_path / "out"
    with pytest.raises(SynthgapError) as e:
        run_study(cfg, str(out))
    message = str(e.value)
    assert "seed 3: FileNotFoundError" in message and "seed 4: FileNotFoundError" in message
    assert "the synthetic cell must run first" in message
    assert (out / "subsets" / "real_train_50pct" / "annotations.json").exists()  # written before the workers
    with pytest.raises(ConfigError, match="jobs must be >= 1"):
        study_config_from_dict({"datasets": DATA, "jobs": 0})


def test_real_only_study_needs_no_synthetic_data():
    cfg = study_config_from_dict({"datasets": {"real_train": "r", "real_test": "t"}, "cells": ["real"],
                                  "fractions": [0.5, 1.0]})
    assert cell_names(cfg) == ["real-50", "real-100"]


def test_holdout_split_is_seeded_disjoint_and_complete():
    keep, held = holdout_split(20, 0.1, 0, "x")
    assert len(held) == 2 and sorted(keep + held) == list(range(20))
    assert holdout_split(20, 0.1, 0, "x") == (keep, held) and holdout_split(20, 0.1, 1, "x") != (keep, held)
    assert len(holdout_split(3, 0.01, 0, "x")[1]) == 1 and len(holdout_split(3, 0.99, 0, "x")[0]) == 1
    with pytest.raises(ValueError, match="x: 1 image"):
        holdout_split(1, 0.1, 0, "x")


def test_yaml_file_nested_subsets_and_real_validation(tmp_path):
    from synthgap.data import open_dataset
    from synthgap.generate import generate

    real = str(tmp_path / "real")
    generate(real, 10, format="coco", seed=0, width=64, height=48, style="target", progress=False)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"datasets": {**DATA, "real_train": real}, "fractions": [0.25, 0.5, 1.0],
                                    "real_holdout": 0.2}))
    cfg = load_study_config(str(path))
    out = str(tmp_path / "out")
    ids = lambda ds: {s.image_id for s in ds}  # noqa: E731
    (pool, _), (val, _) = real_pool_and_val(cfg, out)
    assert len(open_dataset(val)) == 2 and len(open_dataset(pool)) == 8
    assert not ids(open_dataset(val)) & ids(open_dataset(pool))  # validation images are never trained on
    small, half, full = (open_dataset(real_subset(cfg, f, out)) for f in (0.25, 0.5, 1.0))
    assert (len(small), len(half), len(full)) == (2, 4, 8)
    assert ids(small) <= ids(half) <= ids(full) == ids(open_dataset(pool))  # one fixed random order
    originals = {s.image_id: s for s in open_dataset(real)}
    for s in half:  # the subset references the original images and keeps their boxes exactly
        assert os.path.isabs(s.image) and (s.boxes == originals[s.image_id].boxes).all()


def test_synthetic_split_holds_images_out_of_training(tmp_path):
    from synthgap.data import open_dataset
    from synthgap.generate import generate

    syn = str(tmp_path / "syn")
    generate(syn, 10, format="solo", seed=0, width=64, height=48, progress=False)
    cfg = study_config_from_dict({"datasets": {**DATA, "synthetic": syn, "synthetic_format": "solo"},
                                  "synthetic_holdout": 0.3})
    train, held = synthetic_split(cfg, str(tmp_path / "out"))
    train_ds, held_ds, full = open_dataset(train), open_dataset(held), open_dataset(syn, "solo")
    assert (len(train_ds), len(held_ds)) == (7, 3) and train_ds.label_map == full.label_map
    assert {s.image for s in train_ds}.isdisjoint({s.image for s in held_ds})
    assert {s.image for s in train_ds} | {s.image for s in held_ds} == {s.image for s in full}


def test_subsets_keep_the_generators_visible_pixels(tmp_path):
    """The study's COCO subsets (synthetic split from SOLO, real pool / validation / budget from COCO) keep
    each box's visible and unoccluded pixels, so AP by occlusion is available on them, with the same
    visible fractions as the original data (matched by image id)."""
    import numpy as np

    from synthgap.data import open_dataset
    from synthgap.generate import generate
    from synthgap.metrics import evaluate
    from synthgap.metrics.attributes import box_attributes

    syn, real = str(tmp_path / "syn"), str(tmp_path / "real")
    generate(syn, 8, format="solo", seed=0, width=64, height=48, progress=False)
    generate(real, 8, format="coco", seed=1, width=64, height=48, style="target", progress=False)
    cfg = study_config_from_dict({"datasets": {**DATA, "synthetic": syn, "synthetic_format": "solo",
                                               "real_train": real}, "synthetic_holdout": 0.3, "real_holdout": 0.3})
    out = str(tmp_path / "out")
    (pool, _), (val, _) = real_pool_and_val(cfg, out)
    subsets = [(syn, "solo", synthetic_split(cfg, out)[1]), (real, None, pool), (real, None, val),
               (real, None, real_subset(cfg, 0.5, out))]  # the 50 % subset is read from the pool's table
    for original, fmt, path in subsets:
        full = list(open_dataset(original, fmt))
        want = box_attributes(full, root=original)["occlusion"]
        offset = np.cumsum([0] + [len(s) for s in full])
        row = {s.image_id: want[offset[i]:offset[i + 1]] for i, s in enumerate(full)}
        samples = list(open_dataset(path))
        got = box_attributes(samples, root=path)
        assert got["occlusion_source"] == "generator", path
        np.testing.assert_array_equal(got["occlusion"], np.concatenate([row[s.image_id] for s in samples]))
        dets = [{"image_id": s.image_id, "category_id": int(c), "bbox": b, "score": 0.9}
                for s in samples for b, c in zip(s.boxes.tolist(), s.labels)]
        occ = evaluate(samples, dets, "coco", label_map=open_dataset(path).label_map, attributes=True,
                       attributes_root=path).attributes["occlusion"]
        assert occ["available"] and sum(b["num_gt"] for b in occ["bins"].values()) > 0, path


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
                                               "real_val": real, "real_format": "groceries-real",
                                               "real_train_split": "train", "real_val_split": "val",
                                               "real_test_split": "test"}, "fractions": [0.5]})
    out = str(tmp_path / "out")
    for which in ("train", "val", "test"):
        path, fmt = real_data(cfg, which, out)
        expected = open_dataset(real, "groceries-real", split=which)
        got = open_dataset(path, fmt)
        assert fmt == "coco" and sorted(s.image_id for s in got) == sorted(s.image_id for s in expected)
    (pool, _), (val, _) = real_pool_and_val(cfg, out)  # with real_val: the whole training split is the pool
    assert len(open_dataset(pool)) == 6 and len(open_dataset(val)) == 2
    half = open_dataset(real_subset(cfg, 0.5, out))
    train_ids = {s.image_id for s in open_dataset(real, "groceries-real", split="train")}
    assert len(half) == 3 and {s.image_id for s in half} <= train_ids  # 50 % of the 6 training images


def test_cli_study_bad_config(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("datasets: {synthetic: a}\nseeds: [1, 1]\n")
    res = CliRunner().invoke(main, ["study", "--config", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "s.yaml" in res.output


def test_epochs_for_steps():
    cfg = study_config_from_dict({"datasets": DATA}).train_cfg("real", 0)  # cpu_small: batch 8
    assert epochs_for_steps(10, cfg, 20) == 10     # 2 steps per epoch
    assert epochs_for_steps(100, cfg, 20) == 2     # 13 steps per epoch: 26 >= 20
    assert epochs_for_steps(3, cfg, 1) == 1


# --- the summary and the report from finished cells (nothing trains) -------------------------------

def _finish(out, cell, seed, test, *, target, own, images=4):
    from tests.helpers.runs import finish_cell

    finish_cell(out, cell, seed, test, target=target, own=own, images=images)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """Two seeds of synthetic, real-50, finetune-50: every cell learned except real-50 seed 2."""
    from tests.helpers.runs import make_test_set

    root = tmp_path_factory.mktemp("study")
    test = make_test_set(str(root / "test"), frames=2)
    syn = make_test_set(str(root / "syn"), frames=2, seed=8)
    real = make_test_set(str(root / "real"), frames=2, seed=9)
    raw = {"name": "finished study", "datasets": {"synthetic": syn, "real_train": real, "real_test": test},
           "fractions": [0.5], "seeds": [1, 2], "data_stats": False, "gallery_images": 1}
    out = root / "out"
    values = {  # cell -> seed -> (target AP50, in-domain AP50)
        "synthetic": {1: (0.10, 0.90), 2: (0.12, 0.80)},
        "real-50": {1: (0.30, 0.60), 2: (0.34, 0.05)},
        "finetune-50": {1: (0.40, 0.70), 2: (0.50, 0.75)}}
    for cell, by_seed in values.items():
        for seed, (target, own) in by_seed.items():
            _finish(out, cell, seed, test, target=target, own=own)
    assert run_study(study_config_from_dict(raw), str(out)) == str(out / "summary.json")
    assert not (out / "report.html").exists()  # the report package writes it (the study sits below it)
    report = write_study_report(str(out))
    return out, read_summary(str(out / "summary.json")), open(report, encoding="utf-8").read()


def test_summary_in_domain_ratio_and_the_not_learned_flag(finished_study):
    _, summary, _ = finished_study
    syn = summary.row("synthetic")
    assert syn.learned is True and syn.warning is None and syn.seeds == [1, 2]  # learned: no flag
    assert syn.target[HEADLINE].mean == pytest.approx(0.11) and syn.in_domain[HEADLINE].mean == pytest.approx(0.85)
    assert syn.transfer_ratio.values == pytest.approx([0.10 / 0.90, 0.12 / 0.80])
    real = summary.row("real-50")  # seed 2 scored 0.05 < 0.2 in its own domain: flagged
    assert real.learned is False and NOT_LEARNED in real.warning and "for seed 2 of 2" in real.warning
    assert summary.row("finetune-50").learned is True and summary.in_domain_floor == 0.2


def test_comparison_is_paired_by_seed_and_flagged(finished_study):
    _, summary, _ = finished_study
    (c,) = summary.comparison
    assert c.fraction == 0.5 and c.seeds == [1, 2] and c.train_images == 4
    m = c.metrics[HEADLINE]
    assert m.real.mean == pytest.approx(0.32) and m.finetune.mean == pytest.approx(0.45)
    d = m.difference  # per-seed differences 0.10 and 0.16
    assert d.values == pytest.approx([0.10, 0.16]) and d.mean == pytest.approx(0.13)
    half = 12.706 * math.sqrt(0.0018) / math.sqrt(2)
    assert d.ci == pytest.approx((0.13 - half, 0.13 + half), abs=1e-4)
    assert "real-50 did not learn" in c.warning and "t-interval" in summary.ci_method
    text = " ".join(summary.conclusions)
    assert "At 50 % real data (4 images): no conclusion: real-50 did not learn" in text
    assert "Synthetic only: 0.110 COCO AP50 on the real test set vs 0.850 on held-out synthetic" in text
    printed = format_summary(summary)
    assert "!! " + NOT_LEARNED in printed and "What this says:" in printed


def test_report_shows_comparison_flags_and_dataset_frames(finished_study):
    _, _, text = finished_study
    assert 'id="comparison"' in text and 'id="conclusions"' in text and "target AP against the real fraction" in text
    assert text.count('class="comparison-row"') == 2  # AP50 and AP at the one fraction
    assert '<tr data-learned="false" data-cell="real-50">' in text
    assert '<tr class="run-row" data-run="real-50 seed2" data-learned="false">' in text  # the run's own row
    assert len(re.findall(r'<tr[^>]*data-learned="false"', text)) == 2  # that run and the real-50 summary row
    assert text.count(NOT_LEARNED) >= 3  # summary row, run row, comparison note
    for name in ("synthetic", "real train", "real test"):  # a few frames of every dataset, side by side
        assert f'data-dataset="{name}"' in text
    assert text.count('class="dataset-frame"') == 3


def test_learned_study_concludes_with_an_interval(tmp_path):
    """Both arms learned: the conclusion states the difference and its 95 % interval."""
    from tests.helpers.runs import make_test_set

    test = make_test_set(str(tmp_path / "test"), frames=2)
    real = make_test_set(str(tmp_path / "real"), frames=2, seed=9)
    out = tmp_path / "out"
    for cell, by_seed in {"real-10": {1: (0.30, 0.6), 2: (0.31, 0.6), 3: (0.29, 0.6)},
                          "finetune-10": {1: (0.50, 0.7), 2: (0.52, 0.7), 3: (0.49, 0.7)}}.items():
        for seed, (target, own) in by_seed.items():
            _finish(out, cell, seed, test, target=target, own=own)
    cfg = study_config_from_dict({"datasets": {"synthetic": real, "real_train": real, "real_test": test},
                                  "cells": ["real", "finetune"], "fractions": [0.1], "seeds": [1, 2, 3],
                                  "data_stats": False, "gallery_images": 0})
    run_study(cfg, str(out))
    summary = read_summary(str(out / "summary.json"))
    assert all(r.learned and r.warning is None for r in summary.rows)
    (line,) = [c for c in summary.conclusions if c.startswith("At 10 %")]
    assert "synthetic pretraining added +0.203 COCO AP50" in line and "excludes 0" in line
    assert "over 3 seeds" in line


@pytest.mark.slow  # builds a detector, draws the stats plots and runs its backbone: ~10 s on 2 cores
def test_feature_distance_beside_the_ap_gap(tmp_path):
    """Once the synthetic cell is finished, data_stats adds the Fréchet distance of its backbone to a cached
    stats.json; the summary (JSON, text, report table) sets it beside that model's AP gap. The real
    training data here are the synthetic data themselves: distance 0 on that pair."""
    import torch

    from synthgap.models.checkpoint import checkpoint_name, make_checkpoint, save_checkpoint
    from synthgap.config import load_config
    from synthgap.generate import generate
    from synthgap.models import build_model
    from synthgap.report.html import feature_vs_ap_table
    from synthgap.study import data_stats, summarize

    syn, test = str(tmp_path / "syn"), str(tmp_path / "test")
    generate(syn, 3, format="coco", seed=8, width=64, height=48, progress=False)
    generate(test, 3, format="coco", seed=3, width=64, height=48, style="target", progress=False)
    cfg = study_config_from_dict({"datasets": {"synthetic": syn, "real_train": syn, "real_test": test},
                                  "cells": ["synthetic"], "seeds": [3], "feature_images": 3,
                                  "feature_crops_per_class": 4})
    out = str(tmp_path / "out")
    assert all("features" not in g for g in data_stats(cfg, out)["gap"].values())  # no model yet
    folder = cell_dir(out, "synthetic", 3)
    torch.manual_seed(0)
    tcfg = load_config("cpu_small")
    tcfg.model.name = "fasterrcnn_small_gn"  # GroupNorm: an untrained model's features already vary
    ckpt = os.path.join(folder, "checkpoints", checkpoint_name("last"))
    save_checkpoint(make_checkpoint(model=build_model(tcfg.model, 4), epoch=0, step=0, config=tcfg.to_dict(),
                                    label_map={1: "a", 2: "b", 3: "c"}), ckpt)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"cell": "synthetic", "seed": 3, "metrics": {"coco": {"AP50": 0.1}},
                   "in_domain": {"metrics": {"coco": {"AP50": 0.5}}}}, f)
    doc = data_stats(cfg, out)  # the cached stats.json lacks features: added now
    assert json.loads((tmp_path / "out" / "stats" / "stats.json").read_text())["gap"] == doc["gap"]
    same, other = doc["gap"]["real train"]["features"], doc["gap"]["real test"]["features"]
    assert same["backbone"] == ckpt and same["images"] == [3, 3] and other["images"] == [3, 3]
    assert same["image"] == pytest.approx(0.0, abs=1e-6) and other["image"] > 1e-6

    fg = summarize(cfg, out, doc).feature_gap
    assert fg.model == "synthetic seed3" and fg.backbone == ckpt
    rows = {r.dataset: r for r in fg.rows}
    assert rows["real test"].pair == "synthetic -> real test" and rows["real test"].image == other["image"]
    assert rows["real test"].ap_gap == pytest.approx(0.4)
    assert rows["real test"].transfer_ratio == pytest.approx(0.2)
    assert rows["real train"].target is None  # the model is scored on the real test data only
    text = format_summary(summarize(cfg, out, doc))
    assert "Feature distance beside the AP gap (synthetic seed3's backbone" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("synthetic -> real test"))
    assert line.split()[-4:] == ["0.500", "0.100", "0.400", "0.200"]
    html = feature_vs_ap_table(fg)
    assert 'data-dataset="real test"' in html and "<td>0.4000</td><td>0.2000</td>" in html


TINY_OVERRIDES = ["train.epochs=1", "train.batch_size=4", "eval.batch_size=4", "data.image_size=[128, 96]",
                  "model.min_size=96", "model.max_size=128", "model.rpn_pre_nms_top_n_test=100",
                  "model.rpn_post_nms_top_n_test=50", "model.box_detections_per_img=20", "train.log_every=1"]


@pytest.mark.slow
def test_tiny_study_end_to_end_and_skip_on_rerun(tmp_path):
    from synthgap.generate import generate

    for name, style, frames, seed in (("syn", "synthetic", 5, 0), ("real_train", "target", 6, 1),
                                      ("real_test", "target", 2, 2)):
        generate(str(tmp_path / name), frames, format="coco", seed=seed, width=128, height=96, style=style,
                 progress=False)
    cfg = study_config_from_dict({
        "name": "tiny study", "fractions": [1.0], "seeds": [5], "gallery_images": 1, "overrides": TINY_OVERRIDES,
        "synthetic_holdout": 0.2, "real_holdout": 0.2, "real_steps": 3,
        "datasets": {"synthetic": str(tmp_path / "syn"), "real_train": str(tmp_path / "real_train"),
                     "real_test": str(tmp_path / "real_test")}})
    out = tmp_path / "out"
    run_study(cfg, str(out))
    report = write_study_report(str(out))
    cells = ["synthetic", "real-100", "finetune-100"]
    for cell in cells:
        folder = out / "cells" / cell / "seed5"
        doc = json.loads((folder / "metrics.json").read_text())
        assert doc["cell"] == cell and set(doc["metrics"]) == {"coco", "unity"} and doc["test_data"] == str(
            tmp_path / "real_test")
        assert set(doc["in_domain"]["metrics"]) == {"coco", "unity"} and isinstance(doc["learned"], bool)
        assert doc["train_images"] == (4 if cell == "synthetic" else 5)  # 1 of 5 / 6 held out
        assert doc["train"]["epochs"] == (1 if cell == "synthetic" else 2)  # real_steps=3: 2 batches of 4 per epoch
        for name in ("predictions.json", "metrics_coco.json", "metrics_unity.json", "run.json",
                     "in_domain/predictions.json", "in_domain/metrics_coco.json",
                     "checkpoints/FasterRCNN.last.estimator"):
            assert (folder / name).exists(), name
        assert any("tfevents" in f for f in os.listdir(folder / "tb"))
        for where in (folder, folder / "in_domain"):  # the held-out subsets kept the generator's visible pixels
            occ = json.loads((where / "metrics_coco.json").read_text())["attributes"]["occlusion"]
            assert occ["available"] and sum(b["num_gt"] for b in occ["bins"].values()) > 0, where
    assert json.loads((out / "cells" / "synthetic" / "seed5" / "metrics.json").read_text())["in_domain"]["data"] \
        .endswith(os.path.join("synthetic_holdout", "annotations.json"))
    ft = json.loads((out / "cells" / "finetune-100" / "seed5" / "run.json").read_text())
    assert ft["start_from"].endswith(os.path.join("synthetic", "seed5", "checkpoints", "FasterRCNN.last.estimator"))
    summary = read_summary(str(out / "summary.json"))
    assert [r.name for r in summary.rows] == cells and summary.rows[0].seeds == [5]
    assert [c.fraction for c in summary.comparison] == [1.0]
    text = open(report, encoding="utf-8").read()
    assert "tiny study" in text and 'id="study-summary"' in text and 'id="comparison"' in text
    stats = json.loads((out / "stats" / "stats.json").read_text())  # the data gap section
    assert list(stats["datasets"]) == ["synthetic", "real train", "real test"] and 'id="data-gap"' in text
    fg = summary.feature_gap  # the synthetic model's backbone: feature distance beside its AP gap
    syn_ckpt = str(out / "cells" / "synthetic" / "seed5" / "checkpoints" / "FasterRCNN.last.estimator")
    assert stats["gap"]["real test"]["features"]["backbone"] == syn_ckpt == fg.backbone
    assert [r.dataset for r in fg.rows] == ["real train", "real test"]
    assert 'id="feature-vs-ap"' in text and "Feature distance beside the AP gap" in (out / "summary.txt").read_text()
    assert text.count('class="run-row"') == 3 and text.count('class="gallery-image"') == 3
    for cell in cells:
        assert f'data-run="{cell} seed5"' in text

    # rerun: every cell finished -> nothing retrained; a cell without metrics.json is redone (resumed)
    marker = {c: (out / "cells" / c / "seed5" / "metrics.json").stat().st_mtime_ns for c in cells}
    ckpt = out / "cells" / "synthetic" / "seed5" / "checkpoints" / "FasterRCNN.last.estimator"
    ckpt_time = ckpt.stat().st_mtime_ns
    (out / "cells" / "real-100" / "seed5" / "metrics.json").unlink()
    run_study(cfg, str(out))
    assert ckpt.stat().st_mtime_ns == ckpt_time
    for c in ("synthetic", "finetune-100"):
        assert (out / "cells" / c / "seed5" / "metrics.json").stat().st_mtime_ns == marker[c]
    assert (out / "cells" / "real-100" / "seed5" / "metrics.json").exists()


def test_finished_cells_are_not_rerun_and_seeds_are_averaged(tmp_path, caplog):
    """Cells whose metrics.json exists are skipped (nothing trains here); the summary averages the seeds; a
    changed config is warned about."""
    from tests.helpers.runs import make_run, make_test_set

    test = make_test_set(str(tmp_path / "test"), frames=2)
    syn = make_test_set(str(tmp_path / "syn"), frames=2, seed=8)
    raw = {"name": "done study", "datasets": {"synthetic": syn, "real_test": test},
           "cells": ["synthetic"], "seeds": [1, 2], "data_stats": False, "gallery_images": 1}
    cfg = study_config_from_dict(raw)
    out = tmp_path / "out"
    for seed, ap in ((1, 0.2), (2, 0.4)):
        folder = cell_dir(str(out), "synthetic", seed)
        make_run(folder, test, keep=0.5, seed=seed, name=f"synthetic seed{seed}")
        (out / "cells" / "synthetic" / f"seed{seed}" / "metrics.json").write_text(json.dumps(
            {"cell": "synthetic", "seed": seed, "metrics": {"coco": {"AP": ap}, "unity": {"mAP": ap / 2}}}))
    run_study(cfg, str(out))
    report = write_study_report(str(out))
    (row,) = read_summary(str(out / "summary.json")).rows
    assert row.seeds == [1, 2] and row.target[AP].mean == pytest.approx(0.3)
    assert row.target[AP].std == pytest.approx(0.1414213, rel=1e-5)  # sample std of 0.2, 0.4
    assert row.target[("unity", "mAP")].mean == pytest.approx(0.15)
    assert row.learned is None and "not measured" in row.warning  # no in-domain numbers: said so
    text = open(report, encoding="utf-8").read()
    assert '0.3000<br><span class="sd">&plusmn; 0.1414</span>' in text and text.count('class="run-row"') == 2
    caplog.set_level("WARNING", logger="synthgap.study")
    run_study(study_config_from_dict({**raw, "gallery_images": 0}), str(out))
    assert "study config changed" in caplog.text


def test_example_study_config_is_valid():
    cfg = load_study_config(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "study_groceries_real.yaml"))
    assert cell_names(cfg)[:3] == ["synthetic", "real-10", "finetune-10"] and cfg.datasets.real_val_split == "val"
    # the GPU recipe: datasetinsights' ResNet-50 FPN on ImageNet with its three schedules
    synthetic, real, finetune = (cfg.train_cfg(kind, 47) for kind in ("synthetic", "real", "finetune"))
    assert synthetic.model.name == "fasterrcnn_resnet50_fpn" and synthetic.model.weights_backbone == "imagenet"
    assert (synthetic.train.epochs, real.train.epochs, finetune.train.epochs) == (10, 100, 30)
    assert finetune.optimizer.lr == 2.0e-5 and real.train.batch_size * real.train.accumulation_steps == 64


def test_example_cpu_study_config_is_valid():
    cfg = load_study_config(os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                                         "study_groceries_real_cpu.yaml"))
    synthetic, real = cfg.train_cfg("synthetic", 47), cfg.train_cfg("real", 47)
    assert synthetic.model.name == "fasterrcnn_timm_fpn" and synthetic.model.weights_backbone == "imagenet"
    assert synthetic.model.trainable_backbone_layers == 0 and real.model.trainable_backbone_layers is None
    assert cfg.real_steps == 1000 and cfg.datasets.real_test_split == "test"
