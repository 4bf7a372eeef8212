"""Shared fixtures: the real datasets (skipped when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def _data_root() -> Path | None:
    env = os.environ.get("CFE_DATA_DIR")
    for cand in (env, SHARED):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


DATA_ROOT = _data_root()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if DATA_ROOT is None:
        pytest.skip("no datasets: set CFE_DATA_DIR to a folder like ../shared/datasets")
    return DATA_ROOT


def need(dataset: str) -> Path:
    """Skip the calling test when a dataset folder is absent."""
    if DATA_ROOT is None or not (DATA_ROOT / dataset).is_dir():
        pytest.skip(f"dataset '{dataset}' not found under CFE_DATA_DIR ({DATA_ROOT})")
    return DATA_ROOT
