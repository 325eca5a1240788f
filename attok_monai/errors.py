"""Errors a user can cause (a missing or malformed file, an unknown label, a bad column, an unreadable input).

``InputError`` messages are one short line naming the file (and row) and what was expected; the bundle command
(:mod:`attok_monai.bundle`) prints them without a traceback unless ``--debug`` is given. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "check_flags", "refuse_flag_text", "require_flag", "user_error"]


class InputError(ValueError):
    """Bad input the user can fix; the message names the file/field and what was expected."""


_FLAG_TEXT = ("true", "false")


def _flag_hint(name: str, value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in _FLAG_TEXT:
        return (f"{name}: got the text {value!r} where True or False is expected (MONAI's command line passes "
                f"--{name} {value} on as text, which Python reads as true); write --{name} "
                f"{value.strip().capitalize()}")
    return f"{name}: expected True or False, got {value!r}"


def require_flag(value: object, name: str) -> bool:
    """``value`` if it is a ``bool``; anything else (the text ``"false"`` above all) is refused naming ``name``.

    Raises:
        InputError: ``value`` is not a bool.
    """
    if isinstance(value, bool):
        return value
    raise InputError(_flag_hint(name, value))


def check_flags(**values: object) -> None:
    """:func:`require_flag` for each keyword (a config's yes/no keys, checked before the run starts); one message
    names every bad key."""
    bad = [_flag_hint(k, v) for k, v in values.items() if not isinstance(v, bool)]
    if bad:
        raise InputError("; ".join(bad))


def refuse_flag_text(settings: dict, where: str = "settings") -> None:
    """Refuse any value of ``settings`` that is the text ``"true"``/``"false"`` (any case): no key of ours takes that
    text, and a command line that wrote ``--key false`` meant the boolean (which the text is not: it is truthy).

    Raises:
        InputError: naming every such key.
    """
    bad = [_flag_hint(k, v) for k, v in settings.items() if isinstance(v, str) and v.strip().lower() in _FLAG_TEXT]
    if bad:
        raise InputError(f"{where}: " + "; ".join(bad))


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
