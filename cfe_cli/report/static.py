"""The report's stylesheet and its few lines of script, inlined into index.html (no CDN, no framework).

Without the script every card is shown; with it, the run switch and the filters hide cards and the counts follow.
"""

CSS = """
:root{color-scheme:light dark;--fg:#1b1b1b;--bg:#fff;--muted:#5f5f5f;--line:#d8d8d8;--ok:#1a7f37;--bad:#c62828;
--chip:#f1f1f1}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8e8;--bg:#141414;--muted:#a8a8a8;--line:#3a3a3a;--chip:#262626;
--ok:#5cc878;--bad:#ff7a70}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:110rem;padding:1rem;font:16px/1.45 system-ui,sans-serif;color:var(--fg);
background:var(--bg)}
[hidden]{display:none!important}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.35rem;border-bottom:2px solid var(--line);margin-top:2rem}
h3{font-size:1.1rem;margin:.8rem 0 .3rem}h4{font-size:1rem;margin:1.2rem 0 .4rem}
.muted,.count{color:var(--muted);font-weight:normal}
nav.controls{background:var(--bg);border-bottom:1px solid var(--line);
display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center;padding:.5rem 0}
@media (min-width:48rem){nav.controls{position:sticky;top:0;z-index:1}}
fieldset{border:0;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.2rem .8rem;align-items:center}
legend{float:left;font-weight:600;margin-right:.5rem}
select{font:inherit;max-width:100%}
.runs{display:grid;gap:1rem 2rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr))}
.cards{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,16rem),1fr))}
.card{margin:0;border:1px solid var(--line);border-radius:6px;padding:.4rem;min-width:0}
.card video,.card img{display:block;width:100%;height:auto;background:#000}
.card video{aspect-ratio:1}
figcaption{font-size:.82rem;overflow-wrap:anywhere;margin-top:.3rem}
.chips{list-style:none;display:flex;flex-wrap:wrap;gap:.25rem;padding:0;margin:.3rem 0 0}
.chip{background:var(--chip);border-radius:999px;padding:0 .5rem;font-size:.78rem;white-space:nowrap}
.chip.ok{color:var(--ok)}.chip.bad{color:var(--bad)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
th,td{padding:.2rem .5rem;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}
caption{text-align:left;font-weight:600;padding:.3rem 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;font-size:.85rem;margin:.4rem 0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.grids{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,24rem),1fr))}
.grids figure{margin:0}.grids img{width:100%;height:auto;image-rendering:pixelated}
code{overflow-wrap:anywhere}
"""

JS = """
(function () {
  var all = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };
  var runBoxes = all('#runs input'), pairSel = document.getElementById('pair'), status = all('#status input');
  function keep(card, pair, st) {
    if (pair && card.dataset.pair !== pair) return false;
    if (st === 'failed') return card.dataset.valid === '0';
    return st === 'all' || card.dataset.verdict === st;
  }
  function apply() {
    var on = runBoxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    all('.run').forEach(function (r) { r.hidden = runBoxes.length > 0 && on.indexOf(r.dataset.run) < 0; });
    all('section.model').forEach(function (m) { m.hidden = all('.run', m).every(function (r) { return r.hidden; }); });
    var pair = pairSel ? pairSel.value : '', checked = status.filter(function (b) { return b.checked; })[0];
    var st = checked ? checked.value : 'all', total = 0;
    all('section.pair').forEach(function (sec) {
      var cards = all('.card', sec), n = 0;
      cards.forEach(function (c) { c.hidden = !keep(c, pair, st); if (!c.hidden) n += 1; });
      sec.hidden = n === 0;
      var of = n === cards.length ? '' : ' of ' + cards.length;
      sec.querySelector('.count').textContent = '(' + n + of + (cards.length === 1 ? ' sample)' : ' samples)');
      if (!sec.closest('.run').hidden) total += n;
    });
    var shown = document.getElementById('shown');
    if (shown) shown.textContent = total + (total === 1 ? ' card shown' : ' cards shown');
  }
  all('nav.controls input, nav.controls select').forEach(function (e) { e.addEventListener('change', apply); });
  apply();
})();
"""
