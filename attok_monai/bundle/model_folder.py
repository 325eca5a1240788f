"""Load a trained model folder (``save_pretrained``) for the evaluate, inference and export configs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from attok_monai.bundle.runs import network_state, optional
from attok_monai.networks.nets import AttTokGPTv

__all__ = ["load_pretrained"]


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
