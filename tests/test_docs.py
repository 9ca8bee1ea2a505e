"""Every public name of the package has a docstring (the API reference is built from them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import mdslam

ALIASES = set(mdslam.MOVED_MODULES)


def _modules():
    for info in pkgutil.walk_packages(mdslam.__path__, "mdslam."):
        if info.name not in ALIASES and not info.name.rsplit(".", 1)[-1].startswith("_"):
            yield info.name


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
    for name in names:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if getattr(obj, "__module__", "").startswith("mdslam"):
                yield name, obj


@pytest.mark.parametrize("modname", sorted(_modules()))
def test_public_names_have_docstrings(modname):
    module = importlib.import_module(modname)
    assert (module.__doc__ or "").strip(), f"{modname}: no module docstring"
    missing = []
    for name, obj in _public(module):
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and obj.__module__ == modname:
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not (inspect.getdoc(member) or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, f"{modname}: public names without a docstring: {', '.join(missing)}"
