"""Transform fragments: reusable MONAI transform chains stored as JSON (``transforms/*.json`` in the repository).

A fragment is a JSON list of MONAI config items (``{"_target_": "monai.transforms.RandFlipd", "keys": "image", ...}``)
that operate on a dict whose ``image`` is a channel-first float tensor (C, H, W) in [0, 1] and keep it so. Bundle
configs can splice a fragment in with a MONAI macro, e.g. ``"augment": "%transforms/fundus_train.json"``; Python
code uses :func:`load_transform_fragment`.

Example::

    chain = Compose(load_transform_fragment("fundus_train"))
    chain({"image": torch.rand(3, 28, 28)})["image"]   # float32 (3, 28, 28) in [0, 1]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["default_fragment_dirs", "fragment_names", "load_transform_fragment", "resolve_fragment"]

TRANSFORMS_DIR_ENV = "ATTOK_TRANSFORMS_DIR"


def default_fragment_dirs() -> list[Path]:
    """Where fragment names are looked up: ``$ATTOK_TRANSFORMS_DIR``, ``./transforms`` and the ``transforms/``
    folder of the source checkout this package was imported from (if any), in that order."""
    dirs = []
    if os.environ.get(TRANSFORMS_DIR_ENV):
        dirs.append(Path(os.environ[TRANSFORMS_DIR_ENV]))
    dirs.append(Path.cwd() / "transforms")
    dirs.append(Path(__file__).resolve().parents[2] / "transforms")
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def fragment_names(search_dirs: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Names (file stems) of the fragments found in ``search_dirs`` (default :func:`default_fragment_dirs`)."""
    dirs = [Path(d) for d in search_dirs] if search_dirs is not None else default_fragment_dirs()
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.json")})


def resolve_fragment(path_or_name: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] | None = None) -> Path:
    """The fragment file: ``path_or_name`` itself when it is a file, else ``<dir>/<name>.json`` in ``search_dirs``.

    Raises:
        FileNotFoundError: nothing found; the message lists the places searched and the names available.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    dirs = [Path(d) for d in search_dirs] if search_dirs is not None else default_fragment_dirs()
    name = path.name if path.suffix == ".json" else f"{path.name}.json"
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(
        f"transform fragment {str(path_or_name)!r} not found as a file nor as {name} in {[str(d) for d in dirs]}; "
        f"available: {fragment_names(dirs)}"
    )


def load_transform_fragment(
    path_or_name: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] | None = None
) -> list[Any]:
    """Parse a fragment with ``monai.bundle.ConfigParser`` and return its instantiated transforms (a list).

    Args:
        path_or_name: a ``.json`` file, or a fragment name such as ``"fundus_train"`` (see :func:`resolve_fragment`).
        search_dirs: folders to look names up in (default :func:`default_fragment_dirs`).

    Raises:
        FileNotFoundError: unknown fragment.
        ValueError: the file is not a JSON list of config items.
    """
    path = resolve_fragment(path_or_name, search_dirs)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(content, list) or not all(isinstance(c, dict) and "_target_" in c for c in content):
        raise ValueError(f"{path}: a transform fragment must be a JSON list of {{'_target_': ...}} items")
    parser = ConfigParser({"transforms": content})
    return list(parser.get_parsed_content("transforms", instantiate=True))
