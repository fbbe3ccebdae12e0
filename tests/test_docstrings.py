"""Every docstring example in the packages runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import almmta_jax
import drgrad_jax


def _modules():
    names = []
    for pkg in (drgrad_jax, almmta_jax):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
