"""Temperature scaling of the class probabilities (Guo et al., ICML 2017), fitted on the validation part (issue 19).

One scalar T > 0 rescales the model's class probabilities as ``softmax(log p / T)``: the predicted class never
changes, only how sure the model says it is. :class:`TemperatureHandler` fits T at the end of training on the
validation images (the model folder's weights: the best ones) by minimising the negative log-likelihood, and writes
``temperature.json`` (T, the validation ECE before and after) into the model folder; inference reads it and applies
it (:func:`load_temperature`, :func:`apply_temperature`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from attok_monai.fileio import atomic_write_text

__all__ = ["fit_temperature", "apply_temperature", "load_temperature", "TemperatureHandler", "TEMPERATURE_FILE"]

TEMPERATURE_FILE = "temperature.json"


def apply_temperature(probs: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """(N, K) probabilities -> ``softmax(log p / T)`` (unchanged for ``None`` or 1)."""
    if temperature is None or temperature == 1.0:
        return probs
    return torch.softmax(torch.log(probs.float().clamp(min=1e-12)) / float(temperature), dim=-1)


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The T minimising the NLL of ``softmax(log p / T)`` on (N, K) probabilities and (N,) labels (Adam on log T)."""
    logp = torch.log(probs.detach().float().clamp(min=1e-12))
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_t], lr=0.05)
    with torch.enable_grad():  # also when called under no_grad (a handler at the end of training)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logp / log_t.exp(), y)
            loss.backward()
            opt.step()
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def load_temperature(model_dir: str | os.PathLike) -> float | None:
    """T from the model folder's ``temperature.json`` (``None`` when the model has none)."""
    path = Path(model_dir) / TEMPERATURE_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else None


class TemperatureHandler:
    """At the end of training, fit T on the validation part with the weights in the network (the best ones, loaded
    by ``SavePretrainedHandler`` before it) and write ``temperature.json`` into the model folder.

    Args:
        network: the AttTokGPTv.
        dataset: the validation dataset (items with ``image`` and ``label``).
        templates: the question templates (the open question is asked, as inference does).
        directory: the model folder.
        batch_size: images per forward.
    """

    def __init__(self, network: Any, dataset: Any, templates: Any, directory: str | os.PathLike,
                 batch_size: int = 64) -> None:
        self.network, self.dataset, self.templates = network, dataset, templates
        self.directory, self.batch_size = Path(directory), batch_size

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        from attok_monai.metrics import calibration

        items = []
        for i in range(len(self.dataset)):
            it = self.dataset[i]
            label = torch.as_tensor(it.get("label", -1)).reshape(-1)
            if label.numel() == 1 and int(label[0]) >= 0:  # single-label images only
                items.append({"image": it["image"], "label": int(label[0])})
        if len(items) < 2:
            return
        device = next(self.network.parameters()).device
        question = self.templates.question("open")
        was_training = self.network.training
        self.network.eval()
        probs = []
        try:
            for s in range(0, len(items), self.batch_size):
                chunk = items[s: s + self.batch_size]
                images = torch.stack([torch.as_tensor(np.asarray(it["image"])) for it in chunk]).float().to(device)
                probs.append(self.network.class_probabilities(images, [question] * len(chunk)).float().cpu())
        finally:
            self.network.train(was_training)
        p = torch.cat(probs)
        y = torch.tensor([int(it["label"]) for it in items])
        t = fit_temperature(p, y)
        before = calibration(y.numpy(), p.numpy())["ece"]
        after = calibration(y.numpy(), apply_temperature(p, t).numpy())["ece"]
        atomic_write_text(self.directory / TEMPERATURE_FILE, json.dumps(
            {"temperature": t, "fitted_on": "validation part", "num_images": len(items), "ece_before": before,
             "ece_after": after}, indent=2))
