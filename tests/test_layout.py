"""The repository's layout rules, checked on the source with ``ast``.

* a package never imports the other package's ``_src``; benchmarks and
  notebooks import public names only;
* docstrings cite the design notes in ``docs/``, never notes outside the
  repository ("notes §...", "decision D...");
* no function in the packages is over 120 lines of code and no module over
  400, counting neither docstrings, comments nor blank lines;
* every public name has one path: a public submodule shares no name with its
  package, and ``import <package>`` makes every public submodule reachable.
"""

from __future__ import annotations

import ast
import io
import json
import pathlib
import re
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("drgrad_jax", "almmta_jax")
MAX_FUNCTION_LINES = 120
MAX_MODULE_LINES = 400
STALE_CITATION = re.compile(r"notes\s*(§|section\s+\d)|decision\s+D\d|notes\s+D\d", re.IGNORECASE)


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _python_files(*folders: str) -> list[pathlib.Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Line numbers that hold code: not blank, not only a comment, not in a docstring."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - _docstring_lines(ast.parse(source))


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import, at any depth (also inside functions)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return out


def _notebook_sources(path: pathlib.Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text())["cells"]
    return [(c["cell_type"], "".join(c["source"])) for c in cells]


# ----------------------------------------------------------------------------
# The counting rule itself.
# ----------------------------------------------------------------------------


def test_code_lines_skip_docstrings_comments_and_blanks():
    source = '''"""Module docstring
over two lines."""

# a comment
def f(x):
    """Docstring."""
    y = (x +
         1)  # trailing comment
    return y
'''
    assert sorted(code_lines(source)) == [5, 7, 8, 9]


# ----------------------------------------------------------------------------
# Imports.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_the_other_packages_src(package):
    other = next(p for p in PACKAGES if p != package)
    bad = []
    for path in _python_files(package):
        for line, module in _imported_modules(ast.parse(path.read_text())):
            if module == f"{other}._src" or module.startswith(f"{other}._src."):
                bad.append(f"{_rel(path)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_benchmarks_and_notebooks_import_public_names_only():
    bad = []
    for path in _python_files("benchmarks"):
        for line, module in _imported_modules(ast.parse(path.read_text())):
            if "._src" in f".{module}":
                bad.append(f"{_rel(path)}:{line} imports {module}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for n, (kind, source) in enumerate(_notebook_sources(path)):
            if kind == "code" and re.search(r"^\s*(from|import)\s+\S*\._src\b", source, re.M):
                bad.append(f"{_rel(path)} cell {n} imports a _src module")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------
# Citations.
# ----------------------------------------------------------------------------


def test_docstrings_cite_the_docs_pages_not_outside_notes():
    bad = []
    for path in _python_files(*PACKAGES, "benchmarks"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if STALE_CITATION.search(node.value):
                    bad.append(f"{_rel(path)}:{node.lineno}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for n, (_, source) in enumerate(_notebook_sources(path)):
            if STALE_CITATION.search(source):
                bad.append(f"{_rel(path)} cell {n}")
    assert not bad, "stale citations (cite docs/drgrad.md or docs/almmta.md):\n" + "\n".join(bad)


def test_cited_docs_sections_exist():
    """Every "docs/<page>.md, *Section*" citation names a heading of that page."""
    headings = {}
    for page in ("drgrad", "almmta"):
        text = (ROOT / "docs" / f"{page}.md").read_text()
        headings[page] = set(re.findall(r"^#+ (.+?)\s*$", text, re.M))
    cite = re.compile(r"docs/(drgrad|almmta)\.md,?\s+((?:\*[^*]+\*(?:,?\s*(?:and\s+)?)?)+)")
    bad = []
    for path in _python_files(*PACKAGES, "benchmarks"):
        source = path.read_text()
        for m in cite.finditer(source):
            for title in re.findall(r"\*([^*]+)\*", m.group(2)):
                title = " ".join(title.split())
                if title not in headings[m.group(1)]:
                    bad.append(f"{_rel(path)}: docs/{m.group(1)}.md has no section {title!r}")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------
# Sizes.
# ----------------------------------------------------------------------------


def _sizes():
    for path in _python_files(*PACKAGES):
        source = path.read_text()
        lines = code_lines(source)
        functions = []
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = sum(node.lineno <= ln <= node.end_lineno for ln in lines)
                functions.append((node.name, node.lineno, n))
        yield path, len(lines), functions


def test_no_module_over_400_lines_of_code():
    bad = [f"{_rel(path)}: {n} lines of code" for path, n, _ in _sizes() if n > MAX_MODULE_LINES]
    assert not bad, "\n".join(bad)


def test_no_function_over_120_lines_of_code():
    bad = [
        f"{_rel(path)}:{line} {name}: {n} lines of code"
        for path, _, functions in _sizes()
        for name, line, n in functions
        if n > MAX_FUNCTION_LINES
    ]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------
# Public surface.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_one_path(package):
    """Public submodules are reachable from the package, and share no name with it."""
    import importlib
    import pkgutil

    top = importlib.import_module(package)
    exported = set(top.__all__)
    subs = [m.name for m in pkgutil.iter_modules(top.__path__) if not m.name.startswith("_")]
    missing = [s for s in subs if s not in exported]
    assert not missing, f"import {package} does not make {missing} reachable"
    twice = [
        f"{package}.{name} and {package}.{sub}.{name}"
        for sub in subs
        for name in importlib.import_module(f"{package}.{sub}").__all__
        if name in exported
    ]
    assert not twice, "\n".join(twice)
