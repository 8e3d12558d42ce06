"""mkdocs hook (mkdocs.yml ``hooks:``): the API reference must list every public class and function.

Every ``__all__`` in the package (``minicnn``, ``minicnn.nn``, ``minicnn.data``, ``minicnn.train``, and
any module that declares one) names the public API. After the site is built, each of those names that
is a class or a function must have an entry in ``api.md``'s page: an element whose ``id`` is a dotted
``minicnn.`` path ending in that name (mkdocstrings gives every rendered object such an id). The
reference is written by module (``::: minicnn.nn.layers``), so it follows the code wherever a class
moves inside a module; a name that no directive renders fails the build, naming it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

from mkdocs.exceptions import PluginError

API_PAGE = "api.md"
_ids: set[str] = set()


def modules() -> list:
    """minicnn and every public module in it."""
    import minicnn

    return [minicnn] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(minicnn.__path__, "minicnn.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]


def public_names() -> dict[str, str]:
    """``{name: module that lists it in __all__}`` for every public class and function of minicnn."""
    names: dict[str, str] = {}
    for module in modules():
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                names.setdefault(name, module.__name__)
    return names


def on_post_page(output: str, page, config) -> str:
    if page.file.src_uri == API_PAGE:
        _ids.update(re.findall(r'id="(minicnn\.[\w.]+)"', output))
    return output


def on_post_build(config) -> None:
    module_names = {module.__name__ for module in modules()}
    # a class or function documented at a module's top level (not a method of the same name)
    documented = {name for parent, _, name in (i.rpartition(".") for i in _ids) if parent in module_names}
    missing = sorted(f"{module}.{name}" for name, module in public_names().items() if name not in documented)
    if missing:
        raise PluginError(
            f"{API_PAGE}: the API reference lacks {len(missing)} public name(s) listed in an __all__: "
            + ", ".join(missing)
            + "; add a '::: module' directive that renders them (or give them a docstring)"
        )
