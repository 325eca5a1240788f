"""A sheet of ACC attention maps for a fixed sample of the validation part at each validation (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from attok_monai.engines.attention_maps import attention_maps, save_attention_maps

__all__ = ["AttentionMapSampleHandler"]


class AttentionMapSampleHandler:
    """At each validation, the attention maps of the first ``num_images`` validation images to the book of their
    predicted attribute (retrieval), as ``<output_dir>/attention_maps.png`` titled with the clinical names (label ->
    predicted). Does nothing for a model without ACC.

    Args:
        network: the AttTokGPTv.
        dataset: the validation dataset (items with ``image`` (C, H, W) and ``label``).
        output_dir: where the sheet goes (the run's ``val/`` folder).
        num_images: how many images.
    """

    def __init__(self, network: Any, dataset: Any, output_dir: str | os.PathLike, num_images: int = 8) -> None:
        self.network, self.dataset, self.output_dir, self.num_images = network, dataset, Path(output_dir), num_images

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(self.network, "acc", None) is None or len(self.dataset) == 0:
            return
        items = [self.dataset[i] for i in range(min(self.num_images, len(self.dataset)))]
        device = next(self.network.parameters()).device
        images = torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in items]).float().to(device)
        was_training = self.network.training
        self.network.eval()
        try:
            maps, attrs = attention_maps(self.network, images)
        finally:
            self.network.train(was_training)
        names = self.network.vocabulary.names
        titles = []
        for it, k in zip(items, attrs.tolist()):
            label = it.get("label")
            label = label[0] if isinstance(label, (list, tuple)) else label
            head = f"label: {names[int(label)]}\n" if label is not None and int(label) >= 0 else ""
            titles.append(f"{head}predicted: {names[k]}")
        save_attention_maps(images, maps, titles, self.output_dir / "attention_maps.png")
