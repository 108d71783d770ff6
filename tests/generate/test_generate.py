import hashlib
import json
import os

import numpy as np
import pytest

from synthgap.data import open_dataset
from synthgap.data.solo import read_instance_map
from synthgap.generate import Renderer, generate, parse_shard, read_frame_stats, shard_frames

CLASSES = ["cereal_cheerios_honeynut", "drink_greentea_itoen", "chips_sourcream_lays", "soup_tomato_pacific"]
SMALL = dict(width=160, height=120, classes=CLASSES, progress=False)


def tree_hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.mark.parametrize("format", ["solo", "perception", "coco"])
def test_generated_dataset_reads_back_with_the_rendered_boxes(tmp_path, format):
    summary = generate(str(tmp_path / "d"), 3, format=format, seed=5, **SMALL)
    assert summary["frames_written"] == 3 and summary["boxes"] > 0
    ds = open_dataset(str(tmp_path / "d"))
    assert ds.format == format and len(ds) == 3
    assert ds.label_map == {i + 1: n for i, n in enumerate(CLASSES)}
    r = Renderer(CLASSES, width=160, height=120, seed=5)
    by_frame = {}
    for s in ds:
        k = int(os.path.basename(s.image).split("_")[-1].split(".")[0]) if format != "solo" \
            else int(s.metadata["sequence"])
        by_frame[k] = s
    assert sorted(by_frame) == [0, 1, 2]
    for k, s in by_frame.items():
        _, inst, truth = r.render(k, 3)
        np.testing.assert_array_equal(s.boxes, truth.boxes)
        np.testing.assert_array_equal(s.labels, truth.labels)
        if format != "coco":
            np.testing.assert_array_equal(read_instance_map(s.segmentation["instance"]), inst)
    stats = [json.loads(line) for line in
             (tmp_path / "d" / "generator" / "frames.shard-0-of-1.jsonl").read_text().splitlines()]
    assert [st["frame"] for st in stats] == [0, 1, 2]
    assert [len(st["visible_pixels"]) for st in stats] == [st["boxes"] for st in stats]


def test_coco_output_loads_in_pycocotools(tmp_path):
    pycocotools_coco = pytest.importorskip("pycocotools.coco")
    generate(str(tmp_path / "c"), 2, format="coco", seed=1, **SMALL)
    coco = pycocotools_coco.COCO(str(tmp_path / "c" / "annotations.json"))
    assert sorted(coco.getImgIds()) == [0, 1]
    assert len(coco.getAnnIds()) == sum(len(s) for s in open_dataset(str(tmp_path / "c")))
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
    assert (tmp_path / "c" / "instances" / "frame_000001.png").exists()


def test_same_seed_gives_byte_identical_output(tmp_path):
    generate(str(tmp_path / "a"), 3, format="solo", seed=2, **SMALL)
    generate(str(tmp_path / "b"), 3, format="solo", seed=2, **SMALL)
    ha, hb = tree_hashes(tmp_path / "a"), tree_hashes(tmp_path / "b")
    assert len(ha) > 10 and ha == hb
    generate(str(tmp_path / "c"), 3, format="solo", seed=3, **SMALL)
    assert tree_hashes(tmp_path / "c") != ha


@pytest.mark.parametrize("format", ["solo", "perception"])
def test_shards_together_equal_the_unsharded_run(tmp_path, format):
    frames = 5
    whole = tree_hashes(generate(str(tmp_path / "all"), frames, format=format, seed=7, **SMALL)["out"])
    parts = {}
    for i in range(2):
        out = generate(str(tmp_path / f"s{i}"), frames, format=format, seed=7, shard=(i, 2), **SMALL)
        assert out["frames_written"] == len(range(i, frames, 2))
        parts[i] = tree_hashes(out["out"])
    # every per-frame file (image, instance PNG, SOLO frame JSON) is identical and in exactly one shard
    per_frame = {k: v for k, v in whole.items() if k.startswith(("sequence.", "RGB", "InstanceSegmentation"))}
    assert per_frame
    for rel, digest in per_frame.items():
        owners = [i for i in range(2) if parts[i].get(rel) == digest]
        assert len(owners) == 1, rel
    merged = [json.loads(line) for i in range(2) for line in
              (tmp_path / f"s{i}" / "generator" / f"frames.shard-{i}-of-2.jsonl").read_text().splitlines()]
    unsharded = (tmp_path / "all" / "generator" / "frames.shard-0-of-1.jsonl").read_text().splitlines()
    assert sorted(merged, key=lambda d: d["frame"]) == [json.loads(line) for line in unsharded]
    if format == "solo":  # shards written into one folder give the unsharded dataset, totals included
        for i in range(2):
            generate(str(tmp_path / "same"), frames, format=format, seed=7, shard=(i, 2), **SMALL)
        same = {k: v for k, v in tree_hashes(tmp_path / "same").items() if not k.startswith("generator")}
        assert same == {k: v for k, v in whole.items() if not k.startswith("generator")}
        assert read_frame_stats(str(tmp_path / "same")) == read_frame_stats(str(tmp_path / "all"))
        assert [r["frame"] for r in read_frame_stats(str(tmp_path / "same"))] == list(range(frames))


def test_shard_parsing_and_bad_arguments(tmp_path):
    assert parse_shard("1/3") == (1, 3) and list(shard_frames(7, (1, 3))) == [1, 4]
    for bad in ("3/2", "0/0", "-1/2", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="frames"):
        generate(str(tmp_path / "x"), 0, **SMALL)
    with pytest.raises(ValueError, match="format"):
        generate(str(tmp_path / "x"), 1, format="yolo", **SMALL)
    with pytest.raises(ValueError, match="style"):
        generate(str(tmp_path / "x"), 1, style="real", **SMALL)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------ one writer, --force replaces (issue 14 items 2, 4, 13)

def test_second_generate_into_a_folder_being_written_fails_at_once(tmp_path):
    import subprocess
    import sys

    from synthgap.io import locks

    out = tmp_path / "d"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom synthgap import locks\n"
        "with locks.lock_folder(sys.argv[1], 'synthgap generate --seed 1'):\n"
        "    print('locked', flush=True); time.sleep(60)"), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(locks.FolderLockedError, match=f"pid {holder.pid}.*synthgap generate --seed 1"):
            generate(str(out), 2, format="coco", seed=2, **SMALL)
        with pytest.raises(locks.FolderLockedError):  # --force too: it would swap the folder under the writer
            generate(str(out), 2, format="coco", seed=2, replace_out=True, **SMALL)
        with pytest.raises(locks.FolderLockedError):  # and shards
            generate(str(out), 2, format="solo", seed=2, shard=(0, 2), **SMALL)
        assert not out.exists() or os.listdir(out) == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("format", ["solo", "coco"])
def test_force_replaces_the_dataset_and_keeps_nothing_of_the_earlier_run(tmp_path, format):
    out = tmp_path / "d"
    generate(str(out), 5, format=format, seed=1, **SMALL)
    (out / "stale-extra.txt").write_text("from before")
    generate(str(out), 2, format=format, seed=2, replace_out=True, **SMALL)
    ds = open_dataset(str(out))
    assert len(ds) == 2 and not (out / "stale-extra.txt").exists()
    fresh = tmp_path / "fresh"
    generate(str(fresh), 2, format=format, seed=2, **SMALL)
    assert tree_hashes(out) == tree_hashes(fresh)  # exactly the new dataset, byte for byte
    assert sorted(os.listdir(tmp_path)) == ["d", "fresh"]  # no temporary folder, no lock file left


def test_failed_force_run_keeps_the_old_dataset_and_the_next_run_removes_a_killed_ones_folder(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "d"
    generate(str(out), 2, format="coco", seed=1, **SMALL)
    before = tree_hashes(out)
    with pytest.raises(ValueError):
        generate(str(out), 2, format="coco", seed=1, objects_per_frame=(5, 2), replace_out=True, **SMALL)
    assert tree_hashes(out) == before
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    (tmp_path / f".synthgap-replace-{dead}-0badf00d" / "images").mkdir(parents=True)  # as kill -9 leaves it
    generate(str(out), 1, format="coco", seed=1, replace_out=True, **SMALL)
    assert sorted(os.listdir(tmp_path)) == ["d"] and len(open_dataset(str(out))) == 1


def test_shards_of_another_plan_are_refused_in_one_folder(tmp_path):
    out = str(tmp_path / "same")
    generate(out, 4, format="solo", seed=7, shard=(0, 2), **SMALL)
    with pytest.raises(ValueError, match="another generate plan"):
        generate(out, 4, format="solo", seed=8, shard=(1, 2), **SMALL)
    with pytest.raises(ValueError, match="another generate plan"):
        generate(out, 4, format="solo", seed=7, shard=(1, 3), **SMALL)
    generate(out, 4, format="solo", seed=7, shard=(1, 2), **SMALL)
    assert len(open_dataset(out)) == 4


# ------------------------------------------------ shards in one folder, --force of one shard (issue 23)

@pytest.mark.parametrize("format", ["solo", "perception", "coco"])
def test_shards_into_one_folder_give_the_unsharded_dataset_and_force_replaces_only_its_shard(tmp_path, format):
    frames, args = 8, dict(format=format, seed=7, **SMALL)
    generate(str(tmp_path / "all"), frames, **args)
    out = str(tmp_path / "same")
    first = generate(out, frames, shard=(0, 2), **args)
    assert first["shards_done"] == [0] and first["dataset_frames"] == 4
    assert len(open_dataset(out)) == 4  # a partial dataset until the other shard is done, but a consistent one
    assert generate(out, frames, shard=(1, 2), **args)["dataset_frames"] == frames

    def dataset(root):
        if format == "perception":  # chunk files are named by their first frame: same frames, another split
            return sorted((os.path.basename(s.image), s.boxes.tolist(), s.labels.tolist()) for s in open_dataset(root))
        return {k: v for k, v in tree_hashes(root).items() if not k.startswith("generator")}

    whole = dataset(str(tmp_path / "all"))
    assert dataset(out) == whole and len(open_dataset(out)) == frames
    # a failed shard 1 (its images lost) is repaired by re-running that shard alone with --force
    images = [p for p in tree_hashes(out) if p.startswith(("images/frame_000001", "images/frame_000003",
                                                            "sequence.1/", "sequence.3/", "RGB"))]
    for rel in images:
        if format != "perception" or rel.endswith(("rgb_1.png", "rgb_3.png")):
            os.remove(os.path.join(out, rel))
    redo = generate(out, frames, shard=(1, 2), replace_out=True, **args)
    assert redo["shards_done"] == [0, 1]
    assert dataset(out) == whole  # shard 0's frames were kept
    assert read_frame_stats(out) == read_frame_stats(str(tmp_path / "all"))


def test_force_on_a_shard_empties_a_folder_of_another_plan(tmp_path):
    out = str(tmp_path / "d")
    generate(out, 6, format="coco", seed=1, **SMALL)
    (tmp_path / "d" / "notes.txt").write_text("from before")
    with pytest.raises(ValueError, match="another generate plan"):
        generate(out, 6, format="coco", seed=2, shard=(0, 2), **SMALL)
    generate(out, 6, format="coco", seed=2, shard=(0, 2), replace_out=True, **SMALL)
    assert sorted(os.listdir(tmp_path / "d" / "generator")) == [
        "coco.shard-0-of-2.json", "frames.shard-0-of-2.jsonl", "generation.shard-0-of-2.json"]
    assert not (tmp_path / "d" / "notes.txt").exists()
    assert sorted(s.image_id for s in open_dataset(out)) == [0, 2, 4]
    generate(out, 6, format="coco", seed=2, shard=(1, 2), **SMALL)
    fresh = str(tmp_path / "fresh")
    generate(fresh, 6, format="coco", seed=2, **SMALL)
    assert (tmp_path / "d" / "annotations.json").read_bytes() == (tmp_path / "fresh" / "annotations.json").read_bytes()


def test_a_shard_finishing_while_another_merges_waits_for_it(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "d"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom synthgap.io import locks\n"
        "with locks.lock_folder(sys.argv[1], 'merging', key='merge'):\n"
        "    print('locked', flush=True); time.sleep(1.5)"), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        summary = generate(str(out), 4, format="coco", seed=2, shard=(0, 2), **SMALL)
        assert summary["shards_done"] == [0] and len(open_dataset(str(out))) == 2
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_coco_shards_running_at_the_same_time_give_every_frame(tmp_path):
    import subprocess
    import sys

    out = str(tmp_path / "d")
    runs = [subprocess.Popen([sys.executable, "-m", "synthgap", "generate", "--out", out, "--frames", "12", "--format",
                              "coco", "--width", "96", "--height", "64", "--objects-per-frame", "3-5", "--seed", "3",
                              "--shard", f"{i}/3", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for i in range(3)]
    for r in runs:
        assert r.wait(timeout=120) == 0, r.stdout.read()
    generate(str(tmp_path / "all"), 12, format="coco", seed=3, width=96, height=64, objects_per_frame=(3, 5),
             progress=False)
    assert (tmp_path / "d" / "annotations.json").read_bytes() == (tmp_path / "all" / "annotations.json").read_bytes()


def test_huge_frames_are_refused_before_any_memory_is_taken(tmp_path, ):
    from synthgap.errors import SynthgapError
    from synthgap.generate import generate_paste
    from synthgap.generate.assets import catalog_from_samples
    from tests.helpers.cutouts import cutout_samples

    for gen, extra in ((generate, {}), (generate_paste, {"catalog": None})):
        kwargs = dict(width=50000, height=50000, progress=False)
        if extra:
            kwargs["catalog"] = catalog_from_samples(*cutout_samples(tmp_path / "packs", n=1))
        with pytest.raises(SynthgapError, match="50000x50000 px is too large.*8192 px a side"):
            gen(str(tmp_path / "x"), 1, **kwargs)
    with pytest.raises(SynthgapError, match="too large"):
        Renderer(CLASSES, width=8192, height=4096)  # each side is fine, the area is not
    with pytest.raises(SynthgapError, match="at least 16x16"):
        Renderer(CLASSES, width=8, height=64)
    assert not (tmp_path / "x").exists()
