"""The user-error types: one hierarchy at the bottom of the import graph."""

import subprocess
import sys

from synthgap.models import checkpoint
from synthgap import config, errors
from synthgap.io import download
from synthgap.data import errors as data_errors


def test_one_hierarchy_re_exported_where_it_was():
    for cls in (errors.DatasetError, errors.ConfigError, errors.CheckpointError, errors.DownloadError):
        assert issubclass(cls, errors.SynthgapError) and issubclass(cls, ValueError)
    assert issubclass(errors.DownloadError, RuntimeError)  # as before it joined the hierarchy
    assert data_errors.DatasetError is errors.DatasetError and config.ConfigError is errors.ConfigError
    assert checkpoint.CheckpointError is errors.CheckpointError and download.DownloadError is errors.DownloadError
    e = errors.DatasetError("bbox must be 4 numbers", file="a.json", record="annotations[3]", field="bbox")
    assert str(e) == "a.json: record annotations[3]: field 'bbox': bbox must be 4 numbers"


def test_errors_imports_nothing_of_synthgap():
    code = "import sys, synthgap.errors; print(sorted(m for m in sys.modules if m.startswith('synthgap')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['synthgap', 'synthgap.errors']"


def test_moved_module_paths_are_the_new_modules_with_a_warning():
    """Release 0.1's top-level modules moved into io/, engine/, models/, config/ and study/; the old
    import paths give the new module object itself, so a monkeypatch through either is seen by both."""
    code = ("import warnings, importlib; warnings.simplefilter('error', DeprecationWarning)\n"
            "import synthgap.io.storage as new\n"
            "try:\n    importlib.import_module('synthgap.storage')\nexcept DeprecationWarning as w:\n"
            "    print('warned', w)\n"
            "warnings.simplefilter('ignore')\n"
            "import synthgap.storage as old, synthgap.train as tr\n"
            "from synthgap.engine import train\n"
            "print(old is new, tr is train)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "warned synthgap.storage moved to synthgap.io.storage" in out
    assert out.strip().endswith("True True")
