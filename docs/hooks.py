"""mkdocs hook: files kept elsewhere in the repository become part of the site.

- ``notebooks/NN_*.ipynb``: the course notebooks stay where the course keeps them (one copy,
  with its committed outputs); mkdocs-jupyter then renders the stored outputs as pages
  (nothing is executed). The student versions in ``notebooks/exercises/`` are left out.
- ``benchmarks/results/*.png``: the figures the benchmark scripts write, shown on the
  benchmark pages (``docs/benchmarks/*.md`` link them as ``results/NAME.png``).

Each file keeps its repository path as its path in the site.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = ("notebooks/[0-9][0-9]_*.ipynb", "benchmarks/results/*.png")


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files
def on_files(files: Files, config) -> Files:
    for pattern in PATTERNS:
        for path in sorted(ROOT.glob(pattern)):
            files.append(
                File(
                    path.relative_to(ROOT).as_posix(),
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
