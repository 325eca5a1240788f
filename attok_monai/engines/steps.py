"""Iteration functions for MONAI's SupervisedTrainer / SupervisedEvaluator (``iteration_update``), and the ignite
metrics of generated answers. Batches come from :func:`attok_monai.data.instructions.attok_collate`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from ignite.metrics import Metric

from attok_monai.data.instructions import InstructionTemplates
from attok_monai.metrics import classification_metrics, parse_prediction

__all__ = [
    "AttTokTrainStep", "AttTokEvalStep", "AnswerMetric", "loss_components", "autocast_for", "gather_eval_outputs"
]


def autocast_for(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CUDA; nothing on CPU."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _first_attributes(batch: dict) -> list[list[int]]:
    if "attributes" in batch:
        return [list(a) for a in batch["attributes"]]
    return [[int(x)] for x in torch.as_tensor(batch["label"]).view(-1).tolist()]


class AttTokTrainStep:
    """One training iteration: forward, ``NTP + lambda * ACM``, backward, optimizer step.

    Args:
        amp: bf16 autocast when the device is CUDA.
        grad_clip: max gradient norm (``None`` = no clipping).
        accumulation_steps: gradient accumulation (the optimizer steps every ``accumulation_steps`` iterations).

    Returns a dict: ``loss``, ``ntp``, ``acm``, ``lambda`` (floats), ``batch_size``, ``num_tokens`` (ints),
    ``visual_tokens`` (B, N_v, d) and
    ``visual_targets`` for :class:`attok_monai.handlers.PrototypeEMAHandler`.
    """

    def __init__(self, amp: bool = True, grad_clip: float | None = 1.0, accumulation_steps: int = 1) -> None:
        self.amp = amp
        self.grad_clip = grad_clip
        self.accumulation_steps = max(1, int(accumulation_steps))

    def __call__(self, engine: Any, batch: dict) -> dict:
        model = engine.network
        model.train()
        device = engine.state.device
        images = batch["image"].to(device, non_blocking=True).float()
        attributes = _first_attributes(batch)
        answers = batch.get("answer", [None] * len(attributes))
        core = getattr(model, "module", model)  # DistributedDataParallel keeps the AttTokGPTv in .module
        with autocast_for(device, self.amp):
            out = model(images, batch["question"], answers, attributes)
            z_a, book = core.acm_inputs(out.f_a)  # theta(f^a), theta(book); None without ACM
            loss = engine.loss_function(
                out.logits, out.labels, z_a, out.attr_targets, book, core.book.key_padding_mask()
            )
        (loss / self.accumulation_steps).backward()
        if engine.state.iteration % self.accumulation_steps == 0:
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            engine.optimizer.step()
            engine.optimizer.zero_grad(set_to_none=True)
        comps = getattr(engine.loss_function, "last_components", {})
        return {
            "loss": float(loss.detach()),
            "ntp": comps.get("ntp", float(loss.detach())),
            "acm": comps.get("acm", 0.0),
            "lambda": comps.get("lambda", 0.0),
            "batch_size": images.shape[0],
            "num_tokens": out.num_tokens,
            "visual_tokens": out.visual_tokens,
            "visual_targets": out.visual_targets,
        }


def loss_components(output: dict) -> dict[str, float]:
    """MLflow iteration log: the loss split into NTP and ACM, and lambda."""
    return {k: float(output[k]) for k in ("loss", "ntp", "acm", "lambda") if k in output}


class AttTokEvalStep:
    """One evaluation iteration: greedy answers to the open- and close-ended question of each image, class
    probabilities over the K attributes, retrieval scores with the attribute tokens (key ``retrieval``, absent for a
    model without attribute tokens), and mean visual tokens.

    Args:
        templates: the bundle's question templates (template 0 of each kind is used, options in index order).
        max_new_tokens: generation budget.
        amp: bf16 autocast on CUDA.
    """

    def __init__(self, templates: InstructionTemplates, max_new_tokens: int = 16, amp: bool = True) -> None:
        self.templates = templates
        self.max_new_tokens = max_new_tokens
        self.amp = amp

    def __call__(self, engine: Any, batch: dict) -> dict:
        model = engine.network
        model.eval()
        device = engine.state.device
        images = batch["image"].to(device).float()
        n = images.shape[0]
        open_q = [self.templates.question("open")] * n
        closed_q = [self.templates.question("closed")] * n
        vocab = model.vocabulary
        with torch.no_grad(), autocast_for(device, self.amp):
            open_text = model.generate(images, open_q, self.max_new_tokens)
            closed_text = model.generate(images, closed_q, self.max_new_tokens)
            probs = model.class_probabilities(images, open_q).float().cpu()
            # retrieval through the book only where a_k were trained (attribute tokens); else the key is absent
            retrieval = model.retrieval_scores(images).float().cpu() if model.use_attribute_tokens else None
            visual_mean = model.visual_tokens(images)[1].mean(1).float().cpu()
        labels = [a[0] for a in _first_attributes(batch)]
        return {
            "label": labels,
            "id": list(batch.get("id", [str(i) for i in range(n)])),
            "open_text": open_text,
            "closed_text": closed_text,
            "open_pred": [parse_prediction(vocab, t) for t in open_text],
            "closed_pred": [parse_prediction(vocab, t) for t in closed_text],
            "probs": probs,
            "visual_mean": visual_mean,
        } | ({} if retrieval is None else {"retrieval": retrieval})


class AnswerMetric(Metric):
    """An ignite metric over :class:`AttTokEvalStep` outputs.

    ``name`` is ``<source>_<metric>``: source ``open``/``closed`` (parsed answers), ``prob`` (argmax of the class
    probabilities) or ``retrieval``; metric any key of :func:`classification_metrics` (``accuracy``, ``macro_f1``,
    ``balanced_accuracy``, ``auc`` ...). AUC always uses the class probabilities. A ``retrieval`` metric of a model
    without attribute tokens (no ``retrieval`` in the outputs) is NaN: it is not defined there.
    """

    _SOURCES = ("open", "closed", "prob", "retrieval")

    def __init__(self, name: str, num_classes: int | None = None) -> None:
        source, _, metric = name.partition("_")
        if source not in self._SOURCES or not metric:
            raise ValueError(f"AnswerMetric: name must be <{'|'.join(self._SOURCES)}>_<metric>, got {name!r}.")
        self.source, self.metric, self.num_classes = source, metric, num_classes
        super().__init__(output_transform=lambda o: (o,))

    def reset(self) -> None:
        self._labels: list[int] = []
        self._preds: list[int] = []
        self._probs: list[torch.Tensor] = []

    def update(self, output: Sequence[dict]) -> None:
        out = output[0]
        if self.source == "retrieval" and "retrieval" not in out:
            return  # plain-text baseline: no book retrieval to score
        self._labels += list(out["label"])
        if self.source in ("open", "closed"):
            self._preds += list(out[f"{self.source}_pred"])
        else:
            scores = out["probs"] if self.source == "prob" else out["retrieval"]
            self._preds += scores.argmax(-1).tolist()
        self._probs.append(out["probs"])

    def compute(self) -> float:
        if not self._labels:  # nothing scored (a retrieval metric of a baseline)
            return float("nan")
        probs = torch.cat(self._probs).numpy() if self._probs else None
        k = self.num_classes or (probs.shape[1] if probs is not None else None)
        values = classification_metrics(self._labels, self._preds, probs, num_classes=k)
        if self.metric not in values:
            return float("nan")
        return float(values[self.metric])


def gather_eval_outputs(outputs: Sequence[dict]) -> dict[str, Any]:
    """Concatenate a list of :class:`AttTokEvalStep` outputs."""
    merged: dict[str, Any] = {}
    for out in outputs:
        for k, v in out.items():
            merged.setdefault(k, []).append(v)
    return {
        k: (torch.cat(v).numpy() if isinstance(v[0], torch.Tensor) else [x for part in v for x in part])
        for k, v in merged.items()
    } | {"n": int(sum(len(o["label"]) for o in outputs))}

