"""Errors a user can cause (a missing or malformed file, an unknown label, a bad column, an unreadable input).

``InputError`` messages are one short line naming the file (and row) and what was expected; the bundle command
(:mod:`attok_monai.bundle`) prints them without a traceback unless ``--debug`` is given. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "user_error"]


class InputError(ValueError):
    """Bad input the user can fix; the message names the file/field and what was expected."""


def user_error(exc: BaseException) -> BaseException | None:
    """The innermost user-caused error in ``exc``'s chain (``__cause__`` / ``__context__``), or None.

    User-caused: :class:`InputError` (and its subclasses, e.g. ``DatasetTableError``, ``MissingSaltError``),
    :class:`~attok_monai.data.image2d.ImageReadError` and ``FileNotFoundError``. MONAI wraps errors raised while
    a config expression is evaluated ("Failed to evaluate ConfigExpression") or a transform is applied; this finds
    the original one.
    """
    from attok_monai.data.image2d import ImageReadError

    found = None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (InputError, ImageReadError, FileNotFoundError)):
            found = cur
        cur = cur.__cause__ or cur.__context__
    return found
