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
if DATA_ROOT is not None:  # the code under test (CLI runs without --data-dir) finds the same data
    os.environ.setdefault("CFE_DATA_DIR", str(DATA_ROOT))


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny real model folder trained in seconds on MNIST: classifier, mirror decoder, VAE."""
    from cfe_cli import api

    root = need("mnist")
    folder = tmp_path_factory.mktemp("tiny")
    api.train_clf("mnist", out=folder, epochs=1, batch_size=64, max_steps=60, data_dir=root, device="cpu")
    r = api.train_gen(folder, epochs=1, batch_size=32, max_steps=3, data_dir=root, device="cpu")
    assert Path(r["path"]).is_file()
    r = api.train_gen(folder, method="vae", epochs=3, batch_size=128, max_steps=150, data_dir=root, device="cpu")
    assert Path(r["path"]).is_file()
    return folder
