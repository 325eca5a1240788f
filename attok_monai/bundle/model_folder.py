"""Load a trained model folder (``save_pretrained``) for the evaluate, inference and export configs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from attok_monai.bundle.runs import _jsonable, network_state, optional
from attok_monai.errors import InputError
from attok_monai.networks.nets import AttTokGPTv

__all__ = ["load_pretrained", "split_record", "write_split_record", "check_split", "SPLIT_FILE"]

SPLIT_FILE = "split.json"


def load_pretrained(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> AttTokGPTv:
    """A trained model folder (``save_pretrained``, e.g. ``runs/<run>/model``), optionally with the weights of a
    MONAI checkpoint loaded on top (``checkpoint``: a path, or ``None``/``"none"`` for the folder alone).

    Raises:
        FileNotFoundError: the folder holds no model, or a named checkpoint does not exist.
    """
    directory = Path(directory)
    if not (directory / "model.pt").exists():
        raise FileNotFoundError(
            f"No trained model in {directory}: train the bundle first (configs/train.json) or pass --model_dir."
        )
    model = AttTokGPTv.from_pretrained(directory, map_location=device)
    checkpoint = optional(checkpoint)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file (say --checkpoint none for none).")
        model.load_state_dict(network_state(checkpoint, map_location=device))
    return model.to(device)


def split_record(settings: Mapping[str, Any], data_md5: str | None, computed: bool = True) -> dict[str, Any]:
    """How a run's train/val parts were made, for the model folder's ``split.json``: ``settings`` are the config keys
    that decide a computed split (e.g. ``{"split_seed": 0, "split_fractions": {"train": 0.8, "val": 0.2}}``),
    ``data_md5`` the MD5 of the file that lists the items (table, manifest, question file), ``computed`` False where
    the parts come from a split column or a split file (then the settings decide nothing)."""
    return _jsonable({"computed": bool(computed), "settings": dict(settings), "data_md5": data_md5})


def write_split_record(directory: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``record`` (:func:`split_record`) as ``directory/split.json`` (atomic)."""
    from attok_monai.fileio import atomic_write_text

    atomic_write_text(Path(directory) / SPLIT_FILE, json.dumps(dict(record), indent=2, sort_keys=True))


def check_split(model_dir: str | os.PathLike, split: str, record: Mapping[str, Any] | None) -> None:
    """Refuse to score part ``split`` of a split this evaluation computes otherwise than the model's training run did.

    A computed split depends on its settings (seed, fractions) and on the items it is computed over; scored with
    other settings, or over another table, the ``val`` part can hold images the model trained on. ``record`` is the
    evaluation's own :func:`split_record`; the model's is ``model_dir/split.json`` (written by training). Nothing is
    checked for ``split="test"`` (a held-out test part is never computed from the training items), where either side
    has no record (fixed splits such as MedMNIST's; a model folder from before ``split.json``), or where this
    evaluation's parts come from a split column or file.

    Raises:
        InputError: naming each setting that differs (with the training run's value to pass), or the data's MD5.
    """
    path = Path(model_dir) / SPLIT_FILE
    if split == "test" or record is None or not record.get("computed") or not path.is_file():
        return
    trained = json.loads(path.read_text(encoding="utf-8"))
    if not trained.get("computed"):
        why = ["the model's parts came from a split column or file, this one is computed"]
    else:
        why = [
            f"--{k} {json.dumps(v, separators=(',', ':'))} (this evaluation: {json.dumps(record['settings'].get(k))})"
            for k, v in trained.get("settings", {}).items() if record["settings"].get(k) != v
        ]
        if trained.get("data_md5") != record.get("data_md5"):
            why.append(f"the items differ (data MD5 {record.get('data_md5')}, the model's {trained.get('data_md5')}): "
                       "score a split given by a column or file")
    if why:
        raise InputError(
            f"evaluate --split {split}: {model_dir} was trained on a split computed otherwise, so this '{split}' part "
            f"may hold its training images; {'; '.join(why)}."
        )
