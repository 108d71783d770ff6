"""`synthgap configs` (synthgap/cli/config.py): the packaged configs listed and printed, loadable as printed."""

import os

from click.testing import CliRunner

from synthgap.cli import main
from synthgap.config import load_config


def test_configs_lists_and_prints_the_packaged_configs():
    from synthgap.config import packaged_configs

    result = CliRunner().invoke(main, ["configs"])
    assert result.exit_code == 0
    for name in packaged_configs():
        assert f"\n  {name} " in "\n" + result.output
    assert "fasterrcnn_small_gn" in result.output and "A detector that learns from scratch on a laptop CPU" in \
        result.output
    shown = CliRunner().invoke(main, ["configs", "show", "cpu_small"])
    assert shown.exit_code == 0 and shown.output.startswith("# A detector that learns from scratch")
    assert load_config("cpu_small") == _config_from_text(shown.output)
    resolved = CliRunner().invoke(main, ["configs", "show", "cpu_small", "--resolved"])
    assert resolved.exit_code == 0 and "box_detections_per_img: 100" in resolved.output  # a default, not in the file
    assert _config_from_text(resolved.output) == load_config("cpu_small")
    missing = CliRunner().invoke(main, ["configs", "show", "nope"])
    assert missing.exit_code == 2 and "no packaged config 'nope'" in missing.output and "cpu_small" in missing.output


def _config_from_text(text):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return load_config(f.name)
    finally:
        os.unlink(f.name)
