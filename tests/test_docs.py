"""The documentation tells the truth about the repository.

README.md and docs/*.md name only files that ship and link only to headings that exist; they carry
no unfilled placeholders; the development machines' paths (../shared) appear only in the lab record;
the README stays short; and the model card shows the README's figures for the shipped model.
(That those figures are the shipped file's own is checked in test_export.py, where the corpus is.)
Needs nothing but the repository: no torch, no data.

Usage: python -m pytest -q tests/test_docs.py
"""
import re
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LAB_RECORD = ROOT / "docs" / "experiments.md"  # the one page for reproducing on the development machines
README_MAX_LINES = 250  # issue 22: user documentation, in a user's order
# repository paths written in code spans, e.g. `scripts/paired_gain.py` or `weights/colorizer.onnx`
CODE_PATH = re.compile(r"`((?:scripts|benchmarks|tests|notebooks|docs|examples|web|weights)/[\w./-]+\.[a-z0-9]+)[`\s]")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a row of the model table: | shipped `weights/NAME` | folder | images | figures... | or | grey baseline ... | ...
MODEL_ROW = re.compile(r"^\| (?:shipped `weights/([\w.]+)`|(grey) baseline[^|]*) \| (\w+) \| (\d+) \|(.*)\|\s*$")


def prose_and_code(text: str) -> tuple[str, list[str]]:
    """(the text outside fenced code blocks, the lines inside them)."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return "\n".join(prose), code


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces as hyphens."""
    prose, _ = prose_and_code(path.read_text())
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", prose, flags=re.M)}


def model_table(path: Path) -> dict[tuple[str, str], tuple[int, list[float]]]:
    """A page's model table: (method, folder) -> (images, [PSNR, SSIM, CF, CF originals, dCF]), where method
    is the shipped file's name (``| shipped `weights/NAME` |``) or "grey" (``| grey baseline ... |``)."""
    rows = {}
    for line in path.read_text().splitlines():
        m = MODEL_ROW.match(line)
        if m:
            rows[(m.group(1) or m.group(2), m.group(3))] = (int(m.group(4)), [float(x) for x in m.group(5).split("|")])
    return rows


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_pages_name_only_files_that_exist(page):
    text = page.read_text()
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            missing.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            missing.append(f"{target} (no such heading)")
    named = CODE_PATH.findall(text)
    missing += [p for p in named if not (ROOT / p).exists()]
    if page == README:  # the patterns still find what the README names
        assert len(LINK.findall(text)) >= 5 and len(named) >= 5, (LINK.findall(text), named)
    assert not missing, f"{page.name} names files or headings that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_pages_have_no_placeholders_or_notes(page):
    prose, _ = prose_and_code(page.read_text())
    prose = re.sub(r"`[^`]*`", "", prose)  # names in code (LOCAL_RANK) are real
    placeholders = re.findall(r"\b[A-Z]{2,}(?:_[A-Z0-9]+)+\b|\bTODO\b|\bFIXME\b|\bTBD\b|\bXXX\b|<!--", prose)
    assert not placeholders, f"{page.name} has unfilled placeholders or notes: {placeholders}"


@pytest.mark.parametrize("page", [p for p in DOCS if p != LAB_RECORD], ids=lambda p: p.name)
def test_development_paths_stay_in_the_lab_record(page):
    assert "../shared" not in page.read_text(), f"{page.name}: ../shared paths belong in {LAB_RECORD.name}"


def test_readme_is_short_user_documentation():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    assert headings.index("Two commands") < headings.index("The model") < headings.index("Limitations"), headings


def test_model_card_shows_the_readme_figures():
    readme, card = model_table(README), model_table(ROOT / "docs" / "model-card.md")
    assert {folder for _, folder in readme} == {"val", "val_scenes", "skimage_samples"} and len(readme) == 6, readme
    assert card == readme
