"""synthgap.report.run: which test set a run is re-scored on (run.json's, else --test-data relative to the
working directory), errors that name the run and the file, and the classes a run was scored on."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.errors import DatasetError
from synthgap.report import load_run

from tests.helpers.runs import make_run, make_test_set


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return root, make_test_set(str(root / "real" / "test"), frames=2)


def test_test_data_given_relative_is_relative_to_the_working_directory(test_set, tmp_path, monkeypatch):
    """docs/report.md's form `report RUN --test-data rel/path` (and the notebook's SYNTHGAP_TEST_DATA): it was
    looked up inside the run folder."""
    root, test = test_set
    plain = make_run(str(tmp_path / "runs" / "plain"), test, keep=0.8, seed=2, with_run_json=False)
    monkeypatch.chdir(root)
    run = load_run(plain, test_data=os.path.join("real", "test"))
    assert run.result is not None and run.test_data == test


@pytest.mark.slow
def test_cli_report_test_data_relative_to_the_working_directory(test_set, tmp_path, monkeypatch):
    root, test = test_set
    plain = make_run(str(tmp_path / "runs" / "plain"), test, keep=0.8, seed=2, with_run_json=False)
    monkeypatch.chdir(root)
    res = CliRunner().invoke(main, ["report", plain, "--test-data", "real/test", "--out", str(tmp_path / "r.html"),
                                    "--gallery-images", "1"])
    assert res.exit_code == 0, res.output
    assert "no PR curves" not in (tmp_path / "r.html").read_text()


def test_run_json_test_data_wins_over_the_option_and_stays_relative_to_the_run(test_set, tmp_path, monkeypatch):
    root, test = test_set
    run_dir = make_run(str(tmp_path / "run"), test, keep=0.8, seed=3)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    os.symlink(test, tmp_path / "run" / "its_test")  # a test set named relative to the run folder
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "test_data": "its_test"}))
    other = make_test_set(str(tmp_path / "other"), frames=3, seed=11)  # other images: scoring on it would fail
    monkeypatch.chdir(tmp_path)
    run = load_run(run_dir, test_data="other")
    assert run.test_data == os.path.join(run_dir, "its_test") and run.result is not None
    assert other and len(run.samples) == 2


def test_an_unreadable_test_set_names_the_run_the_file_and_who_named_it(test_set, tmp_path):
    _, test = test_set
    run_dir = make_run(str(tmp_path / "run"), test, keep=0.8, seed=4)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "test_data": "/nonexistent/real/test"}))
    with pytest.raises(DatasetError) as e:
        load_run(run_dir)
    text = str(e.value)
    assert f"run {run_dir}" in text and "/nonexistent/real/test" in text and "run.json test_data" in text
    plain = make_run(str(tmp_path / "plain"), test, keep=0.8, seed=4, with_run_json=False)
    with pytest.raises(DatasetError, match=r"named by --test-data\): .*no such file or folder"):
        load_run(plain, test_data=str(tmp_path / "missing"))


def test_only_the_classes_the_run_was_scored_on_are_re_scored(test_set, tmp_path):
    _, test = test_set
    run_dir = make_run(str(tmp_path / "run"), test, keep=1.0, seed=5)
    full = load_run(run_dir)
    first = sorted(full.label_map)[0]
    preds = json.loads((tmp_path / "run" / "predictions.json").read_text())  # as evaluate writes them: those
    (tmp_path / "run" / "predictions.json").write_text(json.dumps([d for d in preds if d["category_id"] == first]))
    (tmp_path / "run" / "label_alignment.json").write_text(json.dumps({"test_classes": [first]}))
    part = load_run(run_dir)
    assert list(part.label_map) == [first] and list(part.result.per_class) == [first]
    assert all(set(s.labels.tolist()) <= {first} for s in part.samples)
