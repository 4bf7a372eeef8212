"""evaluate: its own folder, rows written as they finish and resumed, one shared classifier."""

from __future__ import annotations

import json

import pytest

from cfe_cli import api
from cfe_cli.errors import InputError
from cfe_cli.evaluation import default_out
from tests.conftest import need


def _run(model, out, **kw):
    return api.evaluate(model, methods=["pgd"], pairs=kw.pop("pairs", "8:3,3:8"), n=4, out=out, realism=False,
                        device="cpu", data_dir=need("mnist"), options={"max_steps": 20}, **kw)


def test_rows_survive_and_resume_runs_only_the_rest(tiny_model, tmp_path):
    out = tmp_path / "e"
    full = _run(tiny_model, out)
    assert [r["pair"] for r in full["rows"]] == ["8:3", "3:8"] and len(full["overall"]) == 1
    doc = json.loads((out / "metrics.json").read_text())
    doc["rows"] = doc["rows"][:1]  # as if killed after the first row
    doc["rows"][0]["l1"] = -1.0  # a marker: a resumed row is kept, not recomputed
    (out / "metrics.json").write_text(json.dumps(doc))
    again = _run(tiny_model, out, resume=True)
    assert again["rows"][0]["l1"] == -1.0
    assert again["rows"][1] | {"seconds_per_cf": 0, "cf_per_second": 0, "seconds_total": 0} == \
        full["rows"][1] | {"seconds_per_cf": 0, "cf_per_second": 0, "seconds_total": 0}
    with pytest.raises(InputError, match="other settings"):
        api.evaluate(tiny_model, methods=["pgd"], pairs="8:3,3:8", n=5, out=out, realism=False, device="cpu",
                     data_dir=need("mnist"), resume=True)


def test_single_pair_has_no_overall_rows_and_other_commands_folders_are_kept(tiny_model, tmp_path):
    one = _run(tiny_model, tmp_path / "one", pairs="8:3")
    assert one["overall"] == [] and len(one["rows"]) == 1
    assert one["threshold"] == 0.75 and "pgd" in one["validity_rules"]
    explain_dir = tmp_path / "x"
    api.explain(["mnist:test:0"], model=tiny_model, method="pgd", out=explain_dir, device="cpu",
                options={"max_steps": 5})
    before = (explain_dir / "metrics.json").read_text()
    with pytest.raises(InputError, match="belongs to another command's run"):
        _run(tiny_model, explain_dir, pairs="8:3")
    assert (explain_dir / "metrics.json").read_text() == before
    assert _run(tiny_model, explain_dir, pairs="8:3", force=True)["rows"]
    assert default_out("mnist", ["mirror", "pgd"]).as_posix() == "out/eval-mnist-mirror-pgd"
