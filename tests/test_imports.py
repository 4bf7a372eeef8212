"""Imports flow one way: cli → api → explainer / outputs / evaluation / training → methods →
engine → models / data; results, files, errors, metrics, render and geometry are leaves."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cfe_cli"

# layer of each module (a module may import only from its own layer or below); leaves are layer 0
LAYERS = {
    "cli": 6,
    "api": 5,
    "explainer": 4, "outputs": 4, "shards": 4, "evaluation": 4, "training": 4, "predicting": 4, "report": 4,
    "methods": 3,
    "engine": 2,
    "models": 1, "data": 1, "inputs": 1, "attributions": 1, "descriptors": 1, "features": 1, "fid": 1, "lpips": 1,
    "identity": 1, "runtime": 1, "precision": 1, "oracle_effnet": 1, "realism": 1, "folders": 1, "distributed": 1,
    "image_scores": 1, "onnx_backend": 1,
    "results": 0, "files": 0, "config": 0, "errors": 0, "metrics": 0, "render": 0, "geometry": 0, "legend": 0,
    "__init__": 0,
    "__main__": 6,
}
# what a leaf may import besides other leaves' errors
LEAF_OK = {"errors", "files"}


def _layer(mod: str) -> int:
    head = mod.split(".")[0]
    return LAYERS[head]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cfe_cli"):
            mod = node.module[len("cfe_cli"):].lstrip(".")
            if mod:
                out.append(mod)
            else:  # from cfe_cli import x
                out.extend(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend(a.name[len("cfe_cli."):] for a in node.names if a.name.startswith("cfe_cli."))
    return out


def test_every_module_has_a_layer():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        assert rel.parts[0] in LAYERS, f"{rel}: give it a layer in tests/test_imports.py"


def test_imports_flow_one_way():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        me = rel.parts[0]
        for mod in _imports(path):
            other = mod.split(".")[0]
            if other in ("__version__",) or other == me:
                continue
            if LAYERS[me] == 0 and other not in LEAF_OK:
                bad.append(f"{'/'.join(rel.parts)} (leaf) imports {mod}")
            elif _layer(other) > LAYERS[me]:
                bad.append(f"{'/'.join(rel.parts)} (layer {LAYERS[me]}) imports {mod} (layer {_layer(other)})")
    assert not bad, "imports against the flow:\n" + "\n".join(sorted(bad))


def test_modules_and_functions_stay_small():
    """No module over 600 lines and no function over 100 (docstring included)."""
    big = []
    for path in PKG.rglob("*.py"):
        src = path.read_text()
        rel = path.relative_to(PKG).as_posix()
        if len(src.splitlines()) > 600:
            big.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                big.append(f"{rel}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, "split these:\n" + "\n".join(big)
