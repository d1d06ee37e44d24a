"""The codebase stays ruff-clean (the rules are in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_ruff_is_clean():
    ruff = str(Path(sys.executable).with_name("ruff"))  # the venv's own ruff, pinned by the test extras
    if not os.path.exists(ruff):
        ruff = shutil.which("ruff") or ""
    if not ruff:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
