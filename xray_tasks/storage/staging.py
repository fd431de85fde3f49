"""Copying a stored tree (a run directory) into a local staging folder without letting a name escape it.

An object key is only a string: ``runs/r1/plots/../../../../home/airflow/.bashrc`` is a valid S3 key, and joined
onto a staging folder it names a file far outside it.  A local tree can hold symbolic links that point anywhere.
Every relative name is therefore checked segment by segment (no empty, ``.``, ``..`` or absolute parts, no NUL or
backslash), the resolved destination must stay inside the staging folder, and a local tree with a symbolic link in
it is refused rather than followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from xray_tasks.errors import BadInput
from xray_tasks.storage.uris import local_path, scheme_of

NAME_SHOWN = 200
"""Characters of a hostile name quoted in an error (a key can be 1 KiB, a local name 4 KiB)."""


class UnsafeName(BadInput):
    """A stored name that would land outside the staging folder, or a symbolic link in a local tree."""


def _shown(name: str) -> str:
    return repr(name if len(name) <= NAME_SHOWN else name[:NAME_SHOWN] + "...")


def relative_name(prefix: str, uri: str) -> str:
    """The name of ``uri`` below ``prefix`` as ``a/b/c``, checked: every segment non-empty, not ``.`` or ``..``.

    Raises:
        UnsafeName: the name is absolute, has an empty, ``.`` or ``..`` segment, a NUL or a backslash, or
            ``uri`` is not below ``prefix``.
    """
    local = scheme_of(prefix) == "local"
    if local:  # the local backend lists plain paths, also for a file:// prefix
        prefix, uri = str(local_path(prefix)).rstrip(os.sep), str(local_path(uri))
    else:
        prefix, uri = str(prefix).rstrip("/"), str(uri)
    sep = os.sep if local else "/"
    if not uri.startswith(prefix + sep):
        raise UnsafeName(f"{_shown(uri)} is not below {_shown(prefix)}")
    rel = uri[len(prefix) + 1 :]
    if local and os.sep != "/":
        rel = rel.replace(os.sep, "/")
    if "\x00" in rel or "\\" in rel:
        raise UnsafeName(f"{_shown(uri)}: a NUL or backslash in a stored name")
    if rel.startswith("/"):
        raise UnsafeName(f"{_shown(uri)}: an absolute name below {_shown(prefix)}")
    bad = [segment for segment in rel.split("/") if segment in ("", ".", "..")]
    if bad:
        kinds = sorted({"an empty segment" if not s else f"a {s!r} segment" for s in bad})
        raise UnsafeName(f"{_shown(uri)}: {' and '.join(kinds)} in the name below {_shown(prefix)}")
    return rel


def target_inside(dest: Path, rel: str) -> Path:
    """``dest / rel``, after checking that the resolved path is inside ``dest`` (symbolic links included).

    Raises:
        UnsafeName: the path resolves outside ``dest``.
    """
    root = Path(dest).resolve()
    target = (root / rel).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafeName(
            f"{_shown(rel)} resolves to {_shown(str(target))}, outside the staging folder {root}"
        )
    return target


def refuse_symlinks(prefix: str) -> None:
    """For a local tree: raise if it holds a symbolic link anywhere (file or folder); nothing is followed.
    A no-op for ``s3://`` prefixes.

    Raises:
        UnsafeName: naming the first link found and where it points.
    """
    if scheme_of(prefix) != "local":
        return
    root = local_path(prefix)
    if root.is_symlink():
        raise UnsafeName(f"{_shown(str(root))} is a symbolic link (to {_shown(os.readlink(root))}): refused")
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            if path.is_symlink():
                raise UnsafeName(
                    f"{_shown(str(path))} is a symbolic link (to {_shown(os.readlink(path))}): a run directory "
                    "must hold plain files only"
                )


def stage_files(files: Iterable[tuple[str, str]], dest: Path, get_file) -> list[Path]:
    """Copy ``(uri, rel)`` pairs into ``dest`` with ``get_file(uri, target)``, each target checked first.

    Every name is checked before the first copy, so a hostile name leaves nothing half-staged.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    planned = []
    for uri, rel in files:
        relative_name("x", f"x/{rel}")  # the same segment rules for names a caller derived itself
        planned.append((uri, target_inside(dest, rel)))
    for uri, target in planned:
        target.parent.mkdir(parents=True, exist_ok=True)
        target_inside(dest, os.path.relpath(target, dest.resolve()))  # a folder made meanwhile is no link
        get_file(uri, target)
    return [target for _, target in planned]
