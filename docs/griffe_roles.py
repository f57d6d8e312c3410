"""A griffe extension for the API reference: Sphinx roles in docstrings become inline code.

eocube's numpydoc docstrings name other objects with Sphinx roles (``:func:`to_eocube```,
``:class:`~eocube.torch.CubeDataset```). mkdocstrings renders docstrings as Markdown,
where a role would show as ``:func:`` before the code; this extension keeps only the
name, as inline code, shortened to its last part for a ``~`` target as Sphinx shows it.
The names stay text, not links, so that the strict build does not depend on every name a
docstring mentions being documented on the site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
"""A Sphinx cross-reference role; group 1 is ``~`` when only the last part is shown."""


def _as_code(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring as inline code."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring once the object tree is complete."""
        _rewrite(obj)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the top-level package's docstring, which :meth:`on_object` is not given."""
        _rewrite(pkg)


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
