"""The manual builds with warnings as errors (API pages from the docstrings included), every page is in
its navigation, and the README stays a short entry point."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def test_the_manual_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "run" / "index.html").read_text()
    assert "run_benchmark" in api and "fingerprint_diff" in api  # pages generated from the docstrings


def _nav_pages(items):
    for item in items:
        for value in item.values() if isinstance(item, dict) else [item]:
            yield from _nav_pages(value) if isinstance(value, list) else [value]


def test_every_page_is_in_the_navigation_and_the_readme_is_short():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # no !!python tags resolved
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == set(_nav_pages(config["nav"]))
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in ("architecture", "running", "explainers", "metrics", "datamodules"):
        assert f"docs/{page}.md" in readme, page
