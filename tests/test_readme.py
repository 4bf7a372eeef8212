"""The README's Python example runs as written: no data directory, no CFE_* variables, shipped weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _api_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]


def test_readme_python_example_runs_without_data(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the example's relative paths, out/ written here
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFE_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    script = tmp_path / "example.py"
    script.write_text(_api_snippet())
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("prediction: 8 ")
    assert lines[1].startswith("8 -> 3 at k = ") and lines[1].endswith("valid: True")
    assert "failures: []" in lines[2] and (tmp_path / "out" / "metrics.json").is_file()
    assert lines[3].startswith("found: [True]")


def test_missing_data_dir_tells_a_python_user_what_to_pass(monkeypatch):
    from cfe_cli import api
    from cfe_cli.errors import DataError

    monkeypatch.delenv("CFE_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        api.datasets()
    msg = str(info.value)
    assert "data_dir=" in msg and "--data-dir" in msg and "CFE_DATA_DIR" in msg and "\n" not in msg
