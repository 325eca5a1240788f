"""Command-line overrides that name no config key are refused by name, before the run starts.

MONAI's ``run`` adds any ``--key value`` it is given to the config: a mistyped key (``--acc_bais False``,
``--lamda_start 0.1``) becomes a new entry nothing reads, and the run trains with the default it meant to change,
without a word. :func:`check_override_keys` compares the keys with the merged config files; the short form
(:mod:`attok_monai.bundle.cli`) calls it on its overrides, and every bundle's ``initialize`` calls
:func:`check_cli_overrides`, which does the same for ``python -m monai.bundle run ...`` by reading ``sys.argv`` (the
only place the override names survive: MONAI merges them into the config before any expression runs). The export
commands (``ckpt_export``, ``onnx_export``, ...) run no ``initialize``: the bundles' ``export.json`` calls the same
check from its network's ``_requires_``, before the model is loaded.

A key is known when it is a top-level key of the merged configs, or, for ``a#b#c``, when that path exists (the last
part may be new inside an existing dict: overriding a nested argument of a component is how MONAI's CLI is meant to be
used). ``monai.bundle.run``'s own arguments are not config keys and pass.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attok_monai.errors import InputError

__all__ = ["EXPORT_COMMANDS", "RUN_ARGUMENTS", "check_cli_overrides", "check_override_keys", "scan_overrides",
           "script_arguments", "unknown_override_keys"]

# ``monai.bundle.run`` / ``create_workflow`` / ``ConfigWorkflow`` arguments (not config keys)
RUN_ARGUMENTS = frozenset({
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
    "workflow_name", "workflow_type", "properties_path",
})
# ``python -m monai.bundle`` commands that read a network from the config and take overrides (the bundles'
# ``export.json``; docs/export.md)
EXPORT_COMMANDS = ("ckpt_export", "onnx_export", "trt_export", "verify_net_in_out")
# the settings ``--tracking mlflow`` takes as overrides (MONAI's docstring of ``run``)
TRACKING_SETTINGS = frozenset({"output_dir", "tracking_uri", "experiment_name", "run_name", "save_execute_config"})


def _known(config: Mapping[str, Any], key: str) -> bool:
    parts = key.replace("::", "#").split("#")
    node: Any = config
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            # a new argument inside an existing component (``--network_def#dropout 0.1``) is fine; a new top level is not
            return i > 0 and i == len(parts) - 1 and isinstance(node, Mapping)
    return True


def script_arguments(command: str) -> frozenset[str] | None:
    """The arguments of ``python -m monai.bundle <command>`` that are not config keys: :data:`RUN_ARGUMENTS` for
    ``run``, the parameters of MONAI's own function for the export and check commands (:data:`EXPORT_COMMANDS`, read
    from ``monai.bundle.scripts`` so that they follow MONAI), None for a command whose overrides are not checked."""
    if command == "run":
        return RUN_ARGUMENTS
    if command not in EXPORT_COMMANDS:
        return None
    import inspect

    from monai.bundle import scripts

    return frozenset(inspect.signature(getattr(scripts, command)).parameters) - {"override"}


def unknown_override_keys(config: Mapping[str, Any], keys: Iterable[str], tracking: bool = False,
                          arguments: frozenset[str] = RUN_ARGUMENTS) -> list[str]:
    """The ``keys`` that are neither the command's own ``arguments`` (``run``'s by default) nor keys (or ``#`` paths)
    of ``config``."""
    allowed = arguments | (TRACKING_SETTINGS if tracking else frozenset())
    return [k for k in keys if k not in allowed and not _known(config, k)]


def check_override_keys(config_files: str | list[str], keys: Iterable[str], tracking: bool = False,
                        arguments: frozenset[str] = RUN_ARGUMENTS) -> None:
    """Refuse override keys that name nothing in the merged ``config_files`` (``arguments``: the command's own, as
    :func:`script_arguments` gives them).

    Raises:
        InputError: naming each unknown key, with the closest config keys when there are any.
    """
    from attok_monai.bundle.resolve import resolve_files

    files = [config_files] if isinstance(config_files, str) else list(config_files)
    config = resolve_files(files)
    unknown = unknown_override_keys(config, keys, tracking=tracking, arguments=arguments)
    if not unknown:
        return
    names = [k for k in config if not k.startswith("_")]
    msgs = []
    for key in unknown:
        close = difflib.get_close_matches(key.split("#")[0], names, n=3, cutoff=0.6)
        msgs.append(f"--{key}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
    where = ", ".join(Path(f).name for f in files)
    raise InputError(f"override(s) {'; '.join(msgs)}: no such key in {where}; a mistyped key would be ignored and the "
                     f"run would keep the default")


def scan_overrides(argv: list[str], own_options: Iterable[str] = (), own_flags: Iterable[str] = ()
                   ) -> tuple[list[str], dict[str, str | None]]:
    """Split a command line into the words that are not overrides and the ``--key value`` / ``--key=value`` / bare
    ``--flag`` overrides (raw text; ``None`` for a bare flag, which fire reads as True). A token after an override key
    is its value. ``own_options`` (e.g. ``--config``) and ``own_flags`` (``--debug``) belong to the caller and go to
    the first list with their value, like any word that does not start with ``--``.

    Raises:
        ValueError: a bare ``--`` (overrides are ``--key value`` pairs).
    """
    own_options, own_flags = frozenset(own_options), frozenset(own_flags)
    ours: list[str] = []
    pairs: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, val = arg.partition("=")
        if key in own_options:
            ours.append(arg)
            if not eq and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 1
        elif arg in own_flags:
            ours.append(arg)
        elif arg == "--":
            raise ValueError(f"unexpected argument {arg!r}: overrides are --key value pairs")
        elif arg.startswith("--"):
            if eq:
                pairs[key[2:]] = val
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                pairs[key[2:]] = argv[i + 1]
                i += 1
            else:
                pairs[key[2:]] = None
        else:
            ours.append(arg)
        i += 1
    return ours, pairs


def check_cli_overrides(argv: list[str] | None = None) -> None:
    """When this process is ``python -m monai.bundle run ...`` (or one of :data:`EXPORT_COMMANDS`, e.g.
    ``ckpt_export``), :func:`check_override_keys` on its ``--key`` overrides against its ``--config_file`` (one file
    or a list, as fire parses it); otherwise nothing (the short form checks its own, and a workflow built in Python has
    no command line). A command line that takes its config from ``--args_file`` is not checked (the file's overrides
    are not on it). ``run`` configs call it in ``initialize``; ``export.json`` in its network's ``_requires_``.

    Raises:
        InputError: an override names no key of the config.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py"):
        return
    arguments = script_arguments(argv[1])
    if arguments is None:
        return
    try:
        _, pairs = scan_overrides(argv[2:])
    except ValueError:
        return  # MONAI's fire reports a malformed command line itself
    if not pairs.get("config_file") or "args_file" in pairs:
        return
    from fire.parser import DefaultParseValue

    files = DefaultParseValue(pairs["config_file"])
    check_override_keys(files if isinstance(files, list) else str(files), pairs,
                        tracking=argv[1] == "run" and "tracking" in pairs, arguments=arguments)
