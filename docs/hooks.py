"""mkdocs hooks: the site serves repository files that live outside docs/, uncopied.

The notebooks (``notebooks/*.ipynb``) and the benchmark plots (``benchmarks/results/``)
stay where the code that makes them writes them; :func:`on_files` adds them to the site
at the same paths. Pages link to them as GitHub resolves a link from ``docs/``
(``../benchmarks/results/codec_core.png``), so that the Markdown reads right in the
repository too, and :func:`on_page_markdown` points those links at the served copies.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

SERVED = {"notebooks": "*.ipynb", "benchmarks/results": "**/*.png"}
"""Repository folder -> the files of it that the site serves."""


def _repository(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


# before mkdocs-jupyter turns the .ipynb files it is given into pages
@event_priority(100)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the served repository files to the site, at their paths in the repository."""
    root = _repository(config)
    for folder, pattern in SERVED.items():
        found = sorted((root / folder).glob(pattern))
        if not found:
            raise FileNotFoundError(f"docs/hooks.py: no {pattern} under {folder}/ to serve")
        for path in found:
            files.append(
                File(
                    path.relative_to(root).as_posix(),
                    src_dir=str(root),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Repoint a page's links to served files from the repository's root to the site's."""
    depth = page.file.src_uri.count("/")
    from_docs = re.escape("../" * (depth + 1))
    folders = "|".join(re.escape(folder) for folder in SERVED)
    return re.sub(rf"\]\({from_docs}(?=(?:{folders})/)", "](" + "../" * depth, markdown)
