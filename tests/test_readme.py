"""Every Python block of README.md runs as written, section by section, in a fresh interpreter."""

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def readme_sections(text: str) -> dict[str, str]:
    """``{section title: its Python blocks joined in order}`` for each ``## `` section with code."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        title = chunk.splitlines()[0].strip()
        blocks = FENCE.findall(chunk)
        if blocks:
            sections[title] = "\n".join(blocks)
    return sections


SECTIONS = readme_sections(README.read_text())


def test_every_python_block_belongs_to_a_section():
    text = README.read_text()
    assert len(SECTIONS) >= 3, sorted(SECTIONS)
    assert FENCE.findall(text.split("\n## ", 1)[0]) == []  # none before the first section


def test_section_splitter_keeps_each_block_in_its_section():
    text = "intro\n## A\n```python\nx = 1\n```\n```bash\nls\n```\n## B\nno code\n## C\n```python\ny = 2\n```\n"
    assert readme_sections(text) == {"A": "x = 1\n", "C": "y = 2\n"}


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_readme_block_runs_as_written(title, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # a user's plain machine
    env["JAX_PLATFORMS"] = "cpu"
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SECTIONS[title]],
        cwd=tmp_path,  # not the repository: the installed package, as a user has it
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    assert done.returncode == 0, f"README section {title!r} failed:\n{done.stderr[-4000:]}"
    print(f"README section {title!r}: {wall:.1f} s\n{done.stdout}")
