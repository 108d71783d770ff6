"""synthgap.stats.features: the Fréchet distance (closed forms, an independent eigen formula) and the dataset
feature gap with a toy backbone on images that differ by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synthgap.data import Sample
from synthgap.stats.features import feature_gap, frechet_distance


def test_frechet_distance_one_dimension_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (500, 1)), rng.normal(-0.5, 0.5, (700, 1))
    want = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_matches_general_eigenvalue_formula():
    # tr((Sa Sb)^1/2) = sum of sqrt of the eigenvalues of Sa Sb (real, >= 0 for PSD matrices)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 0.3
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)).sum()
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((3, 2)))


def colour_stats(images):
    """Toy backbone: per-channel mean and standard deviation of each image (N, 6)."""
    x = torch.stack(list(images)) if not torch.is_tensor(images) else images
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)


def make_set(folder, n, shift, seed):
    """``n`` noisy 32x32 images with two boxes each (labels 1, 2); ``shift`` brightens every pixel."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        base = rng.uniform(0.2, 0.5) + shift
        img = np.clip(base + rng.normal(0, 0.1, (32, 32, 3)), 0, 1)
        img[4:14, 4:14, 0] = np.clip(0.8 + shift + rng.normal(0, 0.05), 0, 1)  # a reddish object
        path = folder / f"{i}.png"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
        samples.append(Sample(image=str(path), width=32, height=32, boxes=np.array([[4., 4., 10., 10.],
                                                                                    [18., 18., 10., 12.]]),
                              labels=np.array([1, 2]), image_id=i))
    return samples


def test_feature_gap_zero_for_same_set_and_monotone_in_shift(tmp_path):
    labels = {1: "box", 2: "can"}
    ref = make_set(tmp_path / "ref", 24, 0.0, seed=0)
    same = feature_gap(ref, ref, colour_stats, label_map_a=labels, label_map_b=labels, crop_size=8)
    assert same["image"] == pytest.approx(0.0, abs=1e-9)
    assert same["per_class"] == {"box": pytest.approx(0.0, abs=1e-9), "can": pytest.approx(0.0, abs=1e-9)}
    gaps = []
    for k, shift in enumerate((0.0, 0.1, 0.2, 0.4)):
        other = make_set(tmp_path / f"s{k}", 24, shift, seed=100 + k)
        gaps.append(feature_gap(ref, other, colour_stats, label_map_a=labels, label_map_b=labels, crop_size=8))
    image = [g["image"] for g in gaps]
    assert image == sorted(image) and image[-1] > 10 * image[0]
    for name in ("box", "can"):
        per = [g["per_class"][name] for g in gaps]
        assert per == sorted(per)
    json.dumps(gaps[-1], allow_nan=False)


def test_feature_gap_classes_matched_by_name_and_capped(tmp_path):
    a = make_set(tmp_path / "a", 6, 0.0, seed=0)
    b = make_set(tmp_path / "b", 6, 0.1, seed=1)
    g = feature_gap(a, b, colour_stats, label_map_a={1: "box", 2: "can"}, label_map_b={1: "can", 2: "box"},
                    crop_size=8, max_images=4, max_crops_per_class=3)
    assert g["images"] == [4, 4] and set(g["per_class"]) == {"box", "can"}
    no_crops = feature_gap(a, b, colour_stats, crops=False)
    assert "per_class" not in no_crops and no_crops["image"] > 0


@pytest.mark.slow
def test_stats_compare_features_with_a_trained_checkpoint(tmp_path):
    """`synthgap stats A --compare A-copy --compare B --features CKPT`: the detector's own backbone (an
    untrained small_gn model saved as a synthgap checkpoint) puts a copy of A at distance 0, B further."""
    import shutil

    from click.testing import CliRunner

    from synthgap.generate.shapes import LABEL_MAP, make_coco
    from synthgap.models.checkpoint import make_checkpoint, save_checkpoint
    from synthgap.cli import main
    from synthgap.config import load_config
    from synthgap.models import build_model

    torch.manual_seed(0)
    cfg = load_config("cpu_small")
    cfg.model.name = "fasterrcnn_small_gn"  # GroupNorm: an untrained model's features already vary
    model = build_model(cfg.model, 4)
    ckpt = str(tmp_path / "model.pt")
    save_checkpoint(make_checkpoint(model=model, epoch=0, step=0, config=cfg.to_dict(), label_map=LABEL_MAP), ckpt)
    a = make_coco(tmp_path / "a", 6, seed=0)
    shutil.copytree(a, tmp_path / "a_copy")
    b = make_coco(tmp_path / "b", 6, size=(120, 64), seed=5, max_objects=3)
    res = CliRunner().invoke(main, ["stats", a, "--compare", str(tmp_path / "a_copy"), "--compare", b,
                                    "--out", str(tmp_path / "out"), "--no-plots", "--features", ckpt,
                                    "--feature-images", "4"])
    assert res.exit_code == 0, res.output
    assert "feature gap" in res.output
    doc = json.loads((tmp_path / "out" / "stats.json").read_text())
    same, other = doc["gap"]["a_copy"]["features"], doc["gap"]["b"]["features"]
    assert same["image"] == pytest.approx(0.0, abs=1e-6) and other["image"] > 1e-4
    assert same["dims"] == 128 and same["backbone"] == ckpt  # small_gn: one 128-channel map
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in same["per_class"].values() if v is not None)
    res = CliRunner().invoke(main, ["stats", a, "--out", str(tmp_path / "o2"), "--features", ckpt])
    assert res.exit_code != 0 and "--compare" in res.output
