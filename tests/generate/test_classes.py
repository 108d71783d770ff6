import json

import pytest

from synthgap.data.errors import DatasetError
from synthgap.generate.classes import check_class_names, default_class_names, label_map, load_class_names
from tests.conftest import shared_fixture


def test_default_names_are_the_63_unity_groceries_classes_in_label_order():
    names = default_class_names()
    fixture = json.loads(shared_fixture("unity_groceries_63_classes.json").read_text())["object_type_names"]
    assert len(names) == 63
    assert names == fixture[1:]  # NONE (background, id 0) dropped: names get ids 1..63
    assert label_map(names)[1] == "book_dorkdiaries_aladdin"
    assert 0 not in label_map(names)


@pytest.mark.parametrize("content", ['["NONE", "a", "b c"]', '{"object_type_names": ["a", "b c"]}',
                                     "# my classes\na\n\nb c\n"])
def test_user_class_files(tmp_path, content):
    path = tmp_path / "classes.txt"
    path.write_text(content)
    assert load_class_names(str(path)) == ["a", "b c"]


@pytest.mark.parametrize("content, kind", [("[]", "empty"), ('["a", "b", "a"]', "duplicate"),
                                           ('["a", 3]', "bad_type"), ('{"names": ["a"]}', "missing_field"),
                                           ('["a",', "malformed_json")])
def test_bad_class_files_name_the_file(tmp_path, content, kind):
    path = tmp_path / "classes.json"
    path.write_text(content)
    with pytest.raises(DatasetError) as e:
        load_class_names(str(path))
    assert e.value.kind == kind
    assert str(path) in str(e.value)


def test_missing_class_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_class_names(str(tmp_path / "nope.json"))


def test_class_lists_given_as_python_lists_are_checked_too():
    assert check_class_names(["NONE", " a ", "b"]) == ["a", "b"]
    with pytest.raises(DatasetError, match="duplicate"):
        check_class_names(["a", "a"])
    with pytest.raises(DatasetError, match="empty"):
        check_class_names([])
