"""The documentation site covers the package, and the package's pointers into it resolve.

The strict build itself (``mkdocs build --strict``, about a minute) runs in ``.ci/run``.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import gctm_mini

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_every_public_module_has_an_api_reference_entry():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: gctm_mini\.(\w+)\s*$", page.read_text(), re.M))
    public = {m.name for m in pkgutil.iter_modules(gctm_mini.__path__)}
    public -= {"__main__"}
    public = {m for m in public if not m.startswith("_")}
    assert sorted(public - documented) == [], "add these modules to a page in docs/api/"
    assert sorted(documented - public) == [], "these API entries name no module"


def test_section_references_in_the_package_resolve_to_docs_sections():
    """Every ``<file>.md §N`` in the package names an existing page with a section N."""
    refs = []
    for path in sorted((ROOT / "gctm_mini").glob("*.py")):
        for m in re.finditer(r"([\w./-]+\.md) §(\d+)", path.read_text(encoding="utf-8")):
            refs.append((path.name, m.group(1), int(m.group(2))))
    for module, page, section in refs:
        target = ROOT / page
        assert target.is_file(), f"{module} points to {page}, which is not in the repository"
        headings = re.findall(r"^## (\d+)\. ", target.read_text(encoding="utf-8"), re.M)
        assert str(section) in headings, f"{module} points to {page} §{section}: no such section"


def test_nav_names_only_pages_that_exist():
    nav = re.findall(r":\s*([\w/.-]+\.(?:md|ipynb))\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    nav += re.findall(r"^\s*- ([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav) > 20
    for entry in nav:
        where = ROOT / entry if entry.startswith("notebooks/") else DOCS / entry
        assert where.is_file(), f"mkdocs.yml names {entry}, which does not exist"


def test_readme_is_a_landing_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 8000
    local = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert local, "the README links the documentation"
    for target in local:
        assert (ROOT / target.split("#")[0]).exists(), f"README links {target}, which is missing"
