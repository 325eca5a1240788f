"""Transform fragments: reusable MONAI transform chains stored as JSON, shipped as package data
(``attok_monai/configs/transforms/*.json``, found with :mod:`importlib.resources`, so an installed package has them).

A fragment is a JSON list of MONAI config items (``{"_target_": "monai.transforms.RandFlipd", "keys": "image", ...}``)
that operate on a dict whose ``image`` is a channel-first float tensor (C, H, W) in [0, 1] and keep it so. Bundle
configs name a fragment (``"augment": "fundus_train"``) and call :func:`load_transform_fragment`; a MONAI macro can
also splice a fragment file in (``"%attok_monai/configs/transforms/fundus_train.json"``, relative to the working
directory).

Example::

    chain = Compose(load_transform_fragment("fundus_train"))
    chain({"image": torch.rand(3, 28, 28)})["image"]   # float32 (3, 28, 28) in [0, 1]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Union

from monai.bundle import ConfigParser

__all__ = [
    "default_fragment_dirs", "fragment_names", "load_transform_fragment", "packaged_fragments", "resolve_fragment",
]

TRANSFORMS_DIR_ENV = "ATTOK_TRANSFORMS_DIR"
# a folder on disk or a folder of package data (a Path for an unpacked install, a zip entry for a zipped one)
FragmentDir = Union[Path, Traversable]


def packaged_fragments() -> Traversable:
    """The folder of the fragments shipped with the package (package data ``attok_monai/configs/transforms``)."""
    return files("attok_monai").joinpath("configs").joinpath("transforms")


def default_fragment_dirs() -> list[FragmentDir]:
    """Where fragment names are looked up: ``$ATTOK_TRANSFORMS_DIR`` (your own chains, if set), then the package's
    fragments (:func:`packaged_fragments`), in that order."""
    dirs: list[FragmentDir] = []
    if os.environ.get(TRANSFORMS_DIR_ENV):
        dirs.append(Path(os.environ[TRANSFORMS_DIR_ENV]))
    dirs.append(packaged_fragments())
    return dirs


def _dirs(search_dirs: Sequence[str | os.PathLike | Traversable] | None) -> list[FragmentDir]:
    if search_dirs is None:
        return default_fragment_dirs()
    return [d if isinstance(d, Traversable) else Path(d) for d in search_dirs]


def fragment_names(search_dirs: Sequence[str | os.PathLike | Traversable] | None = None) -> list[str]:
    """Names (file stems) of the fragments found in ``search_dirs`` (default :func:`default_fragment_dirs`)."""
    names = set()
    for d in _dirs(search_dirs):
        if d.is_dir():
            names.update(p.name[: -len(".json")] for p in d.iterdir() if p.name.endswith(".json") and p.is_file())
    return sorted(names)


def resolve_fragment(
    path_or_name: str | os.PathLike, search_dirs: Sequence[str | os.PathLike | Traversable] | None = None
) -> FragmentDir:
    """The fragment file: ``path_or_name`` itself when it is a file, else ``<dir>/<name>.json`` in ``search_dirs``
    (a :class:`~pathlib.Path`, or a package-data entry with ``read_text()``).

    Raises:
        FileNotFoundError: nothing found; the message lists the places searched and the names available.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    dirs = _dirs(search_dirs)
    name = path.name if path.suffix == ".json" else f"{path.name}.json"
    for d in dirs:
        if d.joinpath(name).is_file():
            return d.joinpath(name)
    raise FileNotFoundError(
        f"transform fragment {str(path_or_name)!r} not found as a file nor as {name} in {[str(d) for d in dirs]}; "
        f"available: {fragment_names(dirs)}"
    )


def load_transform_fragment(
    path_or_name: str | os.PathLike, search_dirs: Sequence[str | os.PathLike | Traversable] | None = None
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
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(content, list) or not all(isinstance(c, dict) and "_target_" in c for c in content):
        raise ValueError(f"{path}: a transform fragment must be a JSON list of {{'_target_': ...}} items")
    parser = ConfigParser({"transforms": content})
    return list(parser.get_parsed_content("transforms", instantiate=True))
