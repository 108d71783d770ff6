"""synthgap.study.config: the group specs are checked when the study config loads, and every example study
YAML in examples/ loads (the groceries examples' recipes: tests/study/test_runner.py)."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

from synthgap.config import ConfigError
from synthgap.study import cell_names, load_study_config, study_config_from_dict

DATA = {"synthetic": "syn", "real_train": "rt", "real_test": "rs"}
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


@pytest.mark.parametrize("key", ["real_group_by", "synthetic_group_by"])
@pytest.mark.parametrize("spec, message", [
    ("video", "expected one of regex:PATTERN, folder, field:NAME"),
    ("regex:", "expected one of"),
    ("field:", "expected one of"),
    ("regex:(IMG_\\d+", "not a regular expression"),
])
def test_a_bad_group_spec_names_the_field_and_the_file(tmp_path, key, spec, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"datasets": {**DATA, key: spec}}))
    with pytest.raises(ConfigError) as e:
        load_study_config(str(path))
    assert str(e.value).startswith(f"{path}: datasets.{key}: group_by {spec!r}") and message in str(e.value)


def test_group_specs_load():
    cfg = study_config_from_dict({"datasets": {**DATA, "real_group_by": r"regex:^(IMG_\d+)_",
                                               "synthetic_group_by": "field:sequence"}})
    assert cfg.datasets.real_group_by == r"regex:^(IMG_\d+)_" and cfg.datasets.synthetic_group_by == "field:sequence"
    assert study_config_from_dict({"datasets": {**DATA, "real_group_by": "folder"}}).datasets.synthetic_group_by is None
    with pytest.raises(ConfigError, match=r"datasets.real_group_by must be"):
        study_config_from_dict({"datasets": {**DATA, "real_group_by": 3}})


def test_every_example_study_config_loads():
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "study_*.yaml")))
    names = {os.path.basename(p) for p in paths}
    assert {"study_groceries_real.yaml", "study_groceries_real_cpu.yaml"} <= names
    for path in paths:
        cfg = load_study_config(path)  # validates every cell kind's training config too
        assert cell_names(cfg)[:3] == ["synthetic", "real-10", "finetune-10"], path
        # the commented group_by lines are valid specs once uncommented
        found = set()
        for line in open(path, encoding="utf-8"):
            key, _, value = line.strip().lstrip("# ").partition(":")
            if key in ("real_group_by", "synthetic_group_by"):
                spec = yaml.safe_load(value.split("  #")[0])
                assert getattr(study_config_from_dict({"datasets": {**DATA, key: spec}}).datasets, key) == spec
                found.add(key)
        assert found == {"real_group_by", "synthetic_group_by"}, path

