"""Run folders: each training run owns what it writes, resumes only what matches, and publishes its model.

A training run writes everything under its own folder ``<bundle>/runs/<run_name>/``::

    settings.json          the settings that decide the result (checked on resume)
    checkpoints/           checkpoint_epoch=N.pt (last epoch, for resuming) and model_best.pt
    model/                 the self-contained model folder (best weights inside), what evaluate/inference score
    val/, configs/, ...    reports and the config snapshot

A finished run points ``<bundle>/runs/latest.json`` at its model folder (atomic write), which is what ``evaluate`` and
``inference`` score when no ``--model_dir`` is given. Nothing reads a checkpoint another run left behind: resuming
needs ``--resume latest`` (the newest run folder of the bundle holding a checkpoint) or ``--resume RUN`` (a run name
or folder), and it refuses a run whose recorded settings differ from the current ones, naming the keys.

MONAI's CLI drops an override whose value is ``None``: every optional path here also takes the strings ``none`` /
``null`` / ``false`` / ``""`` (see :func:`optional`), so ``--checkpoint none`` says "no checkpoint".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from attok_monai.bundle.paths import snapshot_configs
from attok_monai.errors import InputError, refuse_flag_text
from attok_monai.fileio import atomic_write_text

__all__ = [
    "optional",
    "resume_dir",
    "run_dir",
    "run_settings",
    "record_settings",
    "resume_checkpoint",
    "checkpoints_kept",
    "latest_checkpoint",
    "network_state",
    "network_entry",
    "publish_latest",
    "latest_model_dir",
    "check_training_batches",
    "start_run",
    "SETTINGS_FILE",
    "LATEST_FILE",
]

SETTINGS_FILE = "settings.json"
LATEST_FILE = "latest.json"
_NONE_STRINGS = {"", "none", "null", "false", "no", "off"}
# logged with the run but cannot change the trained model (a resumed run may move to a machine with other cores)
# device_name: the machine; torch_threads: the CPU thread count, logged because two runs give bit-identical weights
# only at the same count, but not checked on resume (another count changes the last bits, not the recipe); cpu_model,
# cpu_capability, cpu_kernel_pins: likewise for the CPU, the vector ISA its kernels dispatch to and the variables
# that pin those code paths
_NOT_RESULT_KEYS = {"device_name", "torch_threads", "cpu_model", "cpu_capability", "cpu_kernel_pins"}


def optional(value: Any) -> Any | None:
    """``None`` for ``None``, ``False`` and the strings ``none``/``null``/``false``/``no``/``off``/``""`` (any case);
    the value itself otherwise. Lets a user say "none" for a path override that MONAI's CLI would drop as ``None``."""
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in _NONE_STRINGS:
        return None
    return value


def checkpoints_kept(value: Any) -> int:
    """The ``checkpoints_kept`` key (``n_saved`` of the training checkpoints, one per epoch): how many of the newest a
    run keeps; 1 (the default) is enough to resume, more keep earlier epochs for inspection
    (``benchmarks/diagnose_attok.py --checkpoint``).

    Raises:
        InputError: not a whole number >= 1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"checkpoints_kept: expected a whole number >= 1 (the newest epoch checkpoints a run keeps), "
                         f"got {value!r}.")
    return value


def network_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint file: the ``"network"`` entry of a MONAI ``CheckpointSaver`` file
    (``{"network": ..., "optimizer": ..., ...}``), or the file's state dict as it is."""
    return network_entry(torch.load(path, map_location=map_location, weights_only=True))


def network_entry(checkpoint: Any) -> dict[str, torch.Tensor]:
    """:func:`network_state` of a checkpoint already loaded (``torch.load``), for a reader that needs its other
    entries (the optimizer's state) too."""
    return checkpoint["network"] if isinstance(checkpoint, dict) and "network" in checkpoint else checkpoint


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """The newest ``<prefix>_epoch=N.pt`` in ``directory`` (by N), or ``None``."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = sorted(directory.glob(f"{prefix}_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[-1]))
    return str(found[-1]) if found else None


def _runs_root(bundle_root: str | os.PathLike) -> Path:
    return Path(bundle_root) / "runs"


def resume_dir(resume: Any, bundle_root: str | os.PathLike) -> str | None:
    """The run folder to resume, or ``None`` for a new run.

    Args:
        resume: ``None``/``False``/``"none"`` (a new run, the default); ``"latest"`` or ``True`` (the newest run
            folder under ``<bundle_root>/runs`` that holds a checkpoint); a run name under ``<bundle_root>/runs``;
            or a path to a run folder.
        bundle_root: the bundle folder.

    Raises:
        FileNotFoundError: the named run does not exist or holds no checkpoint.
    """
    resume = optional(resume)
    if resume is None:
        return None
    runs = _runs_root(bundle_root)
    if resume is True or str(resume).strip().lower() == "latest":
        candidates = []
        for d in runs.glob("*") if runs.is_dir() else []:
            ckpt = latest_checkpoint(d / "checkpoints")
            if d.is_dir() and ckpt is not None:
                candidates.append((os.path.getmtime(ckpt), str(d)))
        if not candidates:
            raise FileNotFoundError(f"--resume latest: no run folder under {runs} holds a checkpoint to resume.")
        return max(candidates)[1]
    path = Path(str(resume))
    if not path.is_dir() and (runs / str(resume)).is_dir():
        path = runs / str(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such run folder (neither a path nor a run under {runs}).")
    if latest_checkpoint(path / "checkpoints") is None:
        raise FileNotFoundError(f"--resume {resume}: {path / 'checkpoints'} holds no checkpoint_epoch=N.pt.")
    return str(path)


def run_dir(bundle_root: str | os.PathLike, run_name: str, resumed: str | None = None) -> str:
    """The folder a training run writes to: the resumed run's folder, else ``<bundle_root>/runs/<run_name>``."""
    return str(resumed) if resumed else str(_runs_root(bundle_root) / run_name)


def _jsonable(value: Any) -> Any:
    """A JSON round trip (tuples -> lists, unknown objects -> str) so recorded and current settings compare."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def run_settings(hyperparameters: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The settings that decide a run's result: the logged hyperparameters (data checksum, schedule, switches,
    backbone, library versions, ...) plus ``extra`` keys (``val_interval``, ``amp``, and objects with ``to_dict()``
    such as the vocabulary and the question templates, stored as that dict).

    Output paths, logging, t-SNE, validation batch size and the machine's name are not in it: they cannot change
    the trained model. Nor is the CPU thread count (logged with the hyperparameters): it changes the weights' last
    bits, not the recipe.

    Raises:
        InputError: a value is the text ``"true"``/``"false"`` (MONAI's CLI passes ``--key false`` on as text).
    """
    settings = {k: v for k, v in dict(hyperparameters).items() if k not in _NOT_RESULT_KEYS}
    settings.update({k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in extra.items()})
    refuse_flag_text(settings, "run settings")  # --use_acc false on MONAI's CLI arrives as the (truthy) text "false"
    return _jsonable(settings)


def record_settings(output_dir: str | os.PathLike, settings: Mapping[str, Any]) -> str:
    """Write ``settings.json`` into the run folder (atomic); returns its path."""
    path = Path(output_dir) / SETTINGS_FILE
    atomic_write_text(path, json.dumps(_jsonable(dict(settings)), indent=2, sort_keys=True))
    return str(path)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            a, b = json.dumps(old.get(key, "<absent>")), json.dumps(new.get(key, "<absent>"))
            a, b = (a[:60] + "...") if len(a) > 63 else a, (b[:60] + "...") if len(b) > 63 else b
            out.append(f"{key}: {a} -> {b}")
    return out


def resume_checkpoint(resumed: str | None, settings: Mapping[str, Any]) -> str | None:
    """The checkpoint to resume from (``None`` for a new run), after checking the run's recorded settings.

    Raises:
        ValueError: the resumed run was made with other settings (the message names each differing key) or has
            no ``settings.json``.
    """
    if resumed is None:
        return None
    recorded_file = Path(resumed) / SETTINGS_FILE
    if not recorded_file.is_file():
        raise InputError(f"--resume {resumed}: {recorded_file} is missing, so its settings cannot be checked.")
    recorded = json.loads(recorded_file.read_text())
    diff = _differences(recorded, _jsonable(dict(settings)))
    if diff:
        raise InputError(
            f"--resume {resumed}: that run was made with other settings, so it cannot be resumed with these "
            f"({len(diff)} differ): " + "; ".join(diff)
        )
    return latest_checkpoint(Path(resumed) / "checkpoints")


def check_training_batches(dataloader: Any) -> int:
    """The number of training batches per epoch of ``dataloader`` (per process under DDP), refused when it is 0.

    The bundles drop the last partial batch, so a training part smaller than the loader's ``batch_size`` gives no batch
    at all; ignite then skips the whole run with a warning and the run would end "successfully" with no model. This
    check runs at start-up, before the run folder is written.

    Raises:
        InputError: no batch per epoch (names the item count and the largest ``batch_size`` that trains).
    """
    batches = len(dataloader)
    if batches == 0:
        items = len(dataloader.sampler)  # the items one process draws per epoch (a DistributedSampler's share)
        raise InputError(
            f"train: {items} training item(s) at batch_size {dataloader.batch_size} make no full batch (the last "
            f"partial batch is dropped), so nothing would train; set --batch_size {max(1, items)} or lower, or give "
            "it more items."
        )
    return batches


def start_run(
    output_dir: str | os.PathLike,
    bundle_root: str | os.PathLike,
    settings: Mapping[str, Any],
    dataloader: Any,
    components: Sequence[Any] = (),
    record: bool = True,
    write: bool = True,
) -> int:
    """The last step of a training config's ``initialize``: everything that can refuse the run is checked before
    anything is written, so a bad config value or a training part too small for one batch leaves no run folder.

    By the time the body runs, MONAI's parser has built the arguments: ``components`` (the network, the loss; each
    built once, so the run uses these same objects) and ``settings`` (the run's :func:`run_settings`). Then the
    training loader must give a batch (:func:`check_training_batches`), and only then are the bundle's configs copied
    into ``output_dir/configs`` (:func:`~attok_monai.bundle.paths.snapshot_configs`) and, with ``record`` (a new run,
    not a resumed one), ``settings`` written to ``output_dir/settings.json``. ``write=False`` (a DDP rank other than
    zero) checks but writes nothing. Returns the training batches per epoch.

    Raises:
        InputError: the loader gives no batch per epoch (:func:`check_training_batches`).
    """
    del components  # built by the parser as arguments: that is the check
    batches = check_training_batches(dataloader)
    if write:
        snapshot_configs(bundle_root, output_dir)
        if record:
            record_settings(output_dir, settings)
    return batches


def publish_latest(pointer: str | os.PathLike, run_folder: str | os.PathLike, **info: Any) -> None:
    """Point ``pointer`` (``<bundle>/runs/latest.json``) at a finished run's model folder, atomically. Paths are
    stored relative to the pointer's folder when they are inside it.

    Raises:
        InputError: ``run_folder`` holds no ``model/model.pt`` (the run saved no model, e.g. it ran no epoch); the
            pointer is left as it was, so evaluate and inference never score a model that does not exist.
    """
    pointer, run_folder = Path(pointer), Path(run_folder)
    if not (run_folder / "model" / "model.pt").is_file():
        raise InputError(
            f"train: {run_folder} holds no model/model.pt (no epoch ended with a model saved), so {pointer} is left "
            "as it was."
        )
    base = pointer.parent.resolve()
    model = (run_folder / "model").resolve()
    rel = os.path.relpath(model, base) if model.is_relative_to(base) else str(model)
    atomic_write_text(pointer, json.dumps({"model_dir": rel, **_jsonable(info)}, indent=2))


def latest_model_dir(bundle_root: str | os.PathLike, model_dir: Any = None) -> str:
    """The model folder to score: ``model_dir`` when given, else the one ``<bundle_root>/runs/latest.json`` names.

    Raises:
        FileNotFoundError: no model folder was named and no finished run of this bundle published one.
    """
    model_dir = optional(model_dir)
    if model_dir is not None:
        return str(model_dir)
    pointer = _runs_root(bundle_root) / LATEST_FILE
    if not pointer.is_file():
        raise FileNotFoundError(
            f"No finished training run of {Path(bundle_root).name} ({pointer} is missing): train the bundle first "
            "or pass --model_dir RUN/model."
        )
    target = Path(json.loads(pointer.read_text())["model_dir"])
    return str(target if target.is_absolute() else (pointer.parent / target))
