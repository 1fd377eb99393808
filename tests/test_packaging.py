"""The supported Pythons are stated once in meaning: pyproject, the noxfile and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _versions(pattern: str, text: str) -> list[str]:
    return re.findall(pattern, text)


def test_classifiers_noxfile_and_ci_name_the_same_pythons() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    classifiers = _versions(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    floor = re.search(r'requires-python = ">=(3\.\d+)"', pyproject)
    assert floor is not None
    nox = re.search(r"PYTHON = \[(.*?)\]", (ROOT / "noxfile.py").read_text())
    assert nox is not None
    noxfile = _versions(r'"(3\.\d+)"', nox.group(1))
    ci = re.search(r'SUPPORTED="([\d. ]+)"', (ROOT / ".ci" / "run").read_text())
    assert ci is not None
    assert classifiers == noxfile == ci.group(1).split()
    assert classifiers[0] == floor.group(1)
    assert classifiers == sorted(classifiers, key=lambda v: tuple(map(int, v.split("."))))
