"""Class ids matched by name (synthgap.data.labels): a test set numbering the same classes differently scores
as the same test set, names that differ pair through a class map, conflicts are refused."""

import numpy as np
import pytest

from synthgap.data import Sample, open_dataset
from synthgap.data.labels import align_label_maps, check_label_maps, normalize_name, parse_class_map
from synthgap.errors import DatasetError, LabelMapError
from synthgap.generate.shapes import LABEL_MAP, make_coco
from synthgap.metrics import evaluate
from tests.helpers.labels import PERMUTED, renumbered_coco


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """(training-numbered test set, the same set renumbered, a perfect model's detections in training ids)."""
    root = tmp_path_factory.mktemp("labels")
    make_coco(root / "same", 6, size=(64, 48), seed=1, max_objects=3)
    other = renumbered_coco(root / "same", root / "other")
    same = open_dataset(str(root / "same"))
    perfect = [{"image_id": s.image_id, "category_id": int(c), "bbox": b, "score": 0.9}
               for s in same for b, c in zip(s.boxes.tolist(), s.labels.tolist())]
    return same, open_dataset(other), perfect


def test_a_renumbered_test_set_scores_like_the_original(sets):
    """The bug: the same classes in another id order scored a perfect model near 0 with no warning."""
    same, other, perfect = sets
    assert evaluate(same, perfect).stats["AP"] == 1.0
    assert evaluate(other, perfect).stats["AP"] < 0.1  # ids taken as they are: apples scored as bananas
    alignment = align_label_maps(LABEL_MAP, other.label_map)
    assert alignment.model_to_test == PERMUTED and not alignment.identity
    mapped, dropped = alignment.detections_to_test(perfect)
    assert dropped == 0 and [d["category_id"] for d in mapped] == [PERMUTED[d["category_id"]] for d in perfect]
    result = evaluate(other, mapped, label_map=alignment.test_label_map)
    assert result.stats["AP"] == 1.0
    assert {d["name"]: d["AP"] for d in result.per_class.values()} == {"red": 1.0, "green": 1.0, "blue": 1.0}
    line = alignment.log_line()
    assert "matched by name" in line and "red 1->3" in line and "\n" not in line


def test_swapped_names_with_the_same_ids_are_not_taken_as_the_same_classes(sets):
    same, _, perfect = sets
    swapped = {1: "green", 2: "red", 3: "blue"}
    alignment = align_label_maps(LABEL_MAP, swapped)
    assert alignment.model_to_test == {1: 2, 2: 1, 3: 3}
    assert "red 1->2" in alignment.log_line() and "green 2->1" in alignment.log_line()


def test_names_match_ignoring_case_and_whitespace_only():
    assert normalize_name("  Cereal \t Box ") == normalize_name("cereal box") == "cereal box"
    alignment = align_label_maps({1: "Cereal Box", 2: "soup_can"}, {5: "cereal  box", 6: "soup can"})
    assert alignment.model_to_test == {1: 5}  # soup_can is another name than "soup can"
    assert alignment.model_only == (2,) and alignment.test_only == (6,)
    line = alignment.log_line()
    assert "left out of the metrics: soup can (6)" in line and "detections dropped: soup_can (2)" in line


def test_a_class_map_pairs_names_that_differ(tmp_path):
    model, test = {1: "apple", 2: "banana"}, {1: "Banana", 7: "pomme"}
    alignment = align_label_maps(model, test, class_map=["apple=pomme"])
    assert alignment.model_to_test == {1: 7, 2: 1} and alignment.identity is False
    assert alignment.class_map == {"apple": "pomme"} and "class map (apple=pomme)" in alignment.log_line()
    path = tmp_path / "map.yaml"
    path.write_text("apple: pomme\n")
    assert align_label_maps(model, test, class_map=[str(path)]).model_to_test == {1: 7, 2: 1}
    assert parse_class_map(["a = b", str(path)]) == {"a": "b", "apple": "pomme"}
    with pytest.raises(LabelMapError, match="'aple' is not a class of the model"):
        align_label_maps(model, test, class_map=["aple=pomme"])
    with pytest.raises(LabelMapError, match="'pear' is not a class of the test set"):
        align_label_maps(model, test, class_map={"apple": "pear"})
    with pytest.raises(LabelMapError, match="MODEL_NAME=TEST_NAME nor a mapping file"):
        parse_class_map(["apple"])
    with pytest.raises(LabelMapError, match="mapped twice"):
        parse_class_map(["apple=pomme", "apple=pear"])


def test_conflicts_are_refused_naming_the_map_and_the_classes():
    with pytest.raises(LabelMapError, match=r"model classes 'apple' \(apple=pomme\) and 'pomme' \(same name\) would "
                                            r"both score as test class 'pomme'") as e:
        align_label_maps({1: "apple", 2: "pomme"}, {1: "pomme"}, class_map=["apple=pomme"])
    assert e.value.file == "the test set" and isinstance(e.value, DatasetError)
    with pytest.raises(LabelMapError, match="label ids 1 and 2 are both named 'Apple'") as e:
        align_label_maps({1: "apple", 2: "Apple"}, {1: "apple"}, model_source="m.estimator")
    assert e.value.file == "m.estimator" and e.value.field == "name"
    with pytest.raises(LabelMapError, match="no class of the model"):
        align_label_maps({1: "apple"}, {1: "car"})
    # identical maps: ids can only mean one thing, so duplicate names there are no conflict
    assert align_label_maps({1: "a", 2: "a"}, {1: "a", 2: "a"}).identity


def test_a_checkpoint_without_a_label_map_is_matched_by_id_and_says_so():
    alignment = align_label_maps(None, {1: "apple", 2: "pear"}, model_source="FasterRCNN.estimator")
    assert alignment.by == "id" and alignment.identity and "matched by id" in alignment.log_line()
    with pytest.raises(LabelMapError, match="no label map"):
        align_label_maps(None, {1: "apple"}, class_map=["a=b"])


def test_test_classes_the_model_does_not_know_are_left_out_of_the_ground_truth(tmp_path):
    vis = {"visible_pixels": [10.0, 20.0, 30.0], "full_pixels": [20.0, 20.0, 60.0]}
    s = Sample("x.png", 64, 48, [[0, 0, 5, 5], [10, 10, 5, 5], [20, 20, 5, 5]], [4, 9, 5], image_id=3,
               instance_ids=("a", "b", "c"), iscrowd=[False, True, False], areas=[1.0, 2.0, 3.0], metadata=vis)
    alignment = align_label_maps({1: "apple", 2: "pear"}, {4: "pear", 5: "apple", 9: "violet"})
    assert alignment.test_only == (9,) and alignment.test_label_map == {4: "pear", 5: "apple"}
    (kept,) = alignment.test_samples([s])
    assert kept.labels.tolist() == [4, 5] and kept.instance_ids == ("a", "c") and kept.iscrowd.tolist() == [False] * 2
    assert kept.areas.tolist() == [1.0, 3.0] and kept.metadata["visible_pixels"] == [10.0, 30.0]
    assert kept.metadata["full_pixels"] == [20.0, 60.0] and np.array_equal(kept.boxes, s.boxes[[0, 2]])
    (own,) = alignment.model_samples([s])  # training's validation: ground truth in the model's ids
    assert own.labels.tolist() == [2, 1] and len(own) == 2
    dets = [{"image_id": 3, "category_id": 1, "bbox": [20, 20, 5, 5], "score": 0.8}]
    r = evaluate([own], dets, label_map=alignment.model_label_map)
    assert r.per_class[1]["AP"] == pytest.approx(1.0) and r.per_class[2]["AP"] == 0.0  # pear's box was not found


def test_check_label_maps_for_a_study():
    maps = {"synthetic": {1: "apple", 2: "banana"}, "real_train": {3: "apple", 1: "banana"},
            "real_test": {1: "apple", 2: "banana"}}
    out = check_label_maps(maps)
    assert out["real_train"].model_to_test == {1: 3, 2: 1} and out["real_test"].identity
    with pytest.raises(LabelMapError, match="numbers its classes differently from synthetic: apple is 3 here, 1 "
                                            "there") as e:
        check_label_maps(maps, same_ids=True)
    assert e.value.file == "real_train"
    with pytest.raises(LabelMapError, match="both named"):
        check_label_maps({"synthetic": {1: "a", 2: "A"}})
    assert check_label_maps({"synthetic": None}) == {}
