"""Check that every paragraph of the old single-file diary landed in docs/experiments/.

Usage: python scripts/check_results_split.py [OLD_RESULTS_MD]
OLD_RESULTS_MD defaults to `git show da0afe0:docs/results.md` (the diary before the split).
A paragraph is a block of non-blank lines; it counts as found when it appears verbatim in the
concatenated docs/experiments/*.md, after the split's one edit (image paths img/ -> ../img/).
Exit 0 iff every paragraph is found.
"""
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
old = (Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else
       subprocess.run(["git", "show", "da0afe0:docs/results.md"], cwd=root, capture_output=True, text=True,
                      check=True).stdout)
new = "\n".join(p.read_text() for p in sorted((root / "docs" / "experiments").glob("*.md")))
paras = [p.strip("\n") for p in old.replace("\r", "").split("\n\n") if p.strip()]
missing = []
for p in paras:
    q = p.replace('src="img/', 'src="../img/').replace("](img/", "](../img/")
    if q not in new:
        missing.append(p)
lines = [ln for ln in old.split("\n") if ln.strip()]
missing_lines = [ln for ln in lines
                 if ln.replace('src="img/', 'src="../img/').replace("](img/", "](../img/") not in new]
print(f"{len(paras)} paragraphs, {len(paras) - len(missing)} found, {len(missing)} missing; "
      f"{len(lines)} non-blank lines, {len(lines) - len(missing_lines)} found, {len(missing_lines)} missing")
for p in missing:
    print("MISSING:", p[:200].replace("\n", " / "))
sys.exit(1 if missing or missing_lines else 0)
