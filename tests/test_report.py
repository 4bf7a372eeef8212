"""cfe report: the static HTML gallery of real small runs (shipped MNIST weights), read as HTML and opened in
headless Chromium from file:// (skipped when Chromium is absent; .ci/run installs Debian's package)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from cfe_cli.cli import app
from tests.browser import Browser, find_chromium
from tests.conftest import ROOT, need

XSS = "<img src=x onerror=alert(1)>"


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three small real runs: animate (3 MP4s, --report), explain with PGD (a file named like an HTML tag and a
    broken file), evaluate (mirror and PGD, 2 pairs, --report); and one report of all three."""
    need("mnist")
    root = tmp_path_factory.mktemp("report")
    anim, pgd, ev, rep = root / "anim", root / "pgd", root / "eval", root / "rep"
    r = _cli("animate", "mnist:test:0", "mnist:test:1", "mnist:test:2", "--model", "mnist", "--frames", "8",
             "--out", anim, "--device", "cpu", "--report")
    assert r.exit_code == 0, r.output
    files = root / "inputs"
    files.mkdir()
    shutil.copy(ROOT / "examples" / "mnist_9.png", files / f"{XSS}.png")
    (files / "broken.png").write_bytes(b"not a png")
    r = _cli("explain", "mnist:test:3", files / f"{XSS}.png", files / "broken.png", "--model", "mnist", "--method",
             "pgd", "--steps", "20", "--out", pgd, "--device", "cpu")
    assert r.exit_code == 1 and "broken.png" in r.output  # the broken file failed; the others were explained
    r = _cli("evaluate", "--model", "mnist", "--method", "mirror,pgd", "--pairs", "8:3,3:8", "--n", "4", "--steps",
             "20", "--no-realism", "--out", ev, "--device", "cpu", "--report")
    assert r.exit_code == 0, r.output
    r = _cli("report", anim, pgd, ev, "--out", rep, "--title", "MNIST <b>gallery</b>")
    assert r.exit_code == 0 and "report: 3 runs, 5 cards" in r.output, r.output
    return {"anim": anim, "pgd": pgd, "eval": ev, "rep": rep}


class _Refs(HTMLParser):
    """Every src/href/poster of a page, and its tags with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        self.refs += [v for k, v in attrs if k in ("src", "href", "poster") and v]


def _parse(page: Path) -> _Refs:
    p = _Refs()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def _records(folder: Path) -> list[dict]:
    return json.loads((folder / "metrics.json").read_text())["results"]


def test_report_links_every_file_and_escapes_untrusted_text(runs):
    page = runs["rep"] / "index.html"
    html = page.read_text(encoding="utf-8")
    p = _parse(page)
    assert p.refs and all((page.parent / unquote(r)).is_file() for r in p.refs)  # relative links that resolve
    assert not any(r.startswith(("http:", "https:", "//", "/")) for r in p.refs)  # no CDN, no absolute paths
    videos = [a for t, a in p.tags if t == "video"]
    assert len(videos) == 3 and all(set(a) >= {"controls", "muted", "loop", "playsinline", "poster"}
                                    and a["preload"] == "metadata" for a in videos)
    imgs = [a for t, a in p.tags if t == "img"]
    assert imgs and all(a.get("alt") and a.get("loading") == "lazy" for a in imgs)
    assert html.count('<figure class="card"') == 5  # 3 animate + 2 explained by PGD (the broken file failed)
    assert XSS not in html and "<b>gallery" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "MNIST &lt;b&gt;gallery&lt;/b&gt;" in html
    assert not [a for t, a in p.tags if t == "img" and a.get("src") == "x"]
    assert "Failed inputs (1)" in html and "broken.png" in html
    # the seeds' structure: pair headings, seed-style file names as captions
    first = _records(runs["anim"])[0]
    assert f"{first['source_pred']} → {first['target']}" in html and f"{first['name']}.mp4" in html
    # evaluate: tables, the legend of every column (fd_effnetlite0 is not FID), a grid per pair and method
    assert "Per pair" in html and "Overall" in html and "D.Val" in html and "validity after a 5x5" in html
    rows = json.loads((runs["eval"] / "metrics.json").read_text())["rows"]
    grids = [r["grid_path"] for r in rows if "grid_path" in r]
    assert len(grids) == 4 and all(Path(g).is_file() for g in grids)
    assert all(Path(g).name in html for g in grids)
    # --report wrote each run's own page, linking inside its folder
    for key in ("anim", "eval"):
        own = runs[key] / "index.html"
        assert own.is_file() and all("/" not in unquote(r) for r in _parse(own).refs)


def test_report_needs_no_torch(runs, tmp_path):
    """The report only reads what runs wrote: writing one imports no torch (and starts fast)."""
    code = ("import sys; from cfe_cli.report import write_report; "
            f"r = write_report([{str(runs['anim'])!r}, {str(runs['eval'])!r}], out={str(tmp_path)!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(r['cards'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "3", p.stderr


def test_copy_makes_a_folder_that_works_when_zipped_and_moved(runs, tmp_path):
    r = _cli("report", runs["anim"], runs["pgd"], "--out", tmp_path / "site", "--copy")
    assert r.exit_code == 0, r.output
    archive = shutil.make_archive(str(tmp_path / "site"), "zip", tmp_path / "site")
    shutil.unpack_archive(archive, tmp_path / "elsewhere")
    page = tmp_path / "elsewhere" / "index.html"
    refs = _parse(page).refs
    assert len(refs) >= 5 and all((page.parent / unquote(x)).is_file() for x in refs)
    assert all(not unquote(x).startswith("..") for x in refs)


def test_bad_runs_are_one_line_errors(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.json").write_text('{"hello": 1}')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    for arg, msg in ((tmp_path / "none", "no metrics.json there"),
                     (tmp_path / "other", "not the metrics.json of a cfe"),
                     (tmp_path / "broken", "not a readable metrics.json")):
        r = _cli("report", arg)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1


CHECK = """(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });            // lazy images below the fold load now
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const vids = Array.from(document.querySelectorAll('video'));
  await Promise.all(vids.map(v => new Promise(done => {
    if (v.readyState >= 2) return done();
    v.addEventListener('loadeddata', done); v.addEventListener('error', done); setTimeout(done, 30000);
    v.preload = 'auto'; v.load();
  })));
  return {imgs: imgs.map(i => [i.getAttribute('src'), i.naturalWidth]),
          videos: vids.map(v => [v.currentSrc, v.readyState, v.videoWidth, v.videoHeight]),
          text: document.body.innerText};
})()"""
VISIBLE = "Array.from(document.querySelectorAll('.card')).filter(c => c.getClientRects().length > 0).length"


def _set(b: Browser, selector: str, js: str) -> int:
    """Change a control, fire its change event, and return the number of visible cards."""
    b.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); {js}; "
         "e.dispatchEvent(new Event('change', {bubbles: true})); })()")
    return b.js(VISIBLE)


def test_report_in_headless_chromium(runs):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run does it)")
    recs = {k: _records(runs[k]) for k in ("anim", "pgd")}
    with Browser(binary) as b:
        b.open((runs["rep"] / "index.html").as_uri())
        got = b.js(CHECK)
        assert got["imgs"] and all(w > 0 for _, w in got["imgs"]), got["imgs"]
        assert len(got["videos"]) == 3
        assert all(state >= 2 and w == 800 and h == 800 for _, state, w, h in got["videos"]), got["videos"]
        assert XSS in got["text"]  # shown as text, never run as a tag
        assert b.js(VISIBLE) == 5
        pair = f"{recs['anim'][1]['source_pred']} → {recs['anim'][1]['target']}"
        n_pair = sum(f"{r['source_pred']} → {r['target']}" == pair for rs in recs.values() for r in rs)
        assert 0 < _set(b, "#pair", f"e.value = {json.dumps(pair)}") == n_pair < 5
        assert _set(b, "#pair", "e.value = ''") == 5
        n_correct = sum(r.get("gt") == r["source_pred"] for rs in recs.values() for r in rs)
        assert _set(b, "#status input[value=correct]", "e.checked = true") == n_correct < 5  # the XSS file has no label
        assert _set(b, "#status input[value=all]", "e.checked = true") == 5
        assert _set(b, "#runs input[value='0']", "e.checked = false") == len(recs["pgd"])
        assert b.errors() == []


def test_a_thousand_cards_load_lazily(runs, tmp_path):
    """1,000 cards (the PGD run's records repeated, its real files): written in about a second, and a browser
    decodes only the images near the viewport."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run does it)")
    doc = json.loads((runs["pgd"] / "metrics.json").read_text())
    recs = doc["results"]
    doc["results"] = [dict(recs[i % len(recs)], name=f"no{i}_{recs[i % len(recs)]['name']}") for i in range(1000)]
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "metrics.json").write_text(json.dumps(doc))
    t0 = time.perf_counter()
    r = _cli("report", tmp_path / "big")
    assert r.exit_code == 0 and "1000 cards" in r.output and time.perf_counter() - t0 < 10, r.output
    with Browser(binary) as b:
        b.open((tmp_path / "big" / "index.html").as_uri())
        assert b.js("document.querySelectorAll('.card').length") == 1000
        loaded = b.js("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        assert 0 < loaded < 500 and b.js("document.images[999].complete") is False  # the last, far below: not yet
        assert b.errors() == []
