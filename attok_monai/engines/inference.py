"""Inference: a folder or list of images (PNG/JPEG/TIFF, NIfTI, DICOM) -> a CSV/JSON of answers per image.

Rows hold the image ``id``, the generated open-ended answer (attribute tokens kept), the predicted attribute token
and clinical name, and the class probabilities. For DICOM the ``id`` is a pseudonymised key (with a salt) or a
running index, never a patient identifier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, EnsureTyped, Resized, SpatialPadd

from attok_monai.data.image_transforms import ToChannelsd
from attok_monai.data.instructions import InstructionTemplates, attok_collate
from attok_monai.data.load2d import LoadDicomFramed
from attok_monai.data.manifest import dicom_folder_datalist
from attok_monai.fileio import write_rows
from attok_monai.metrics import parse_prediction

__all__ = ["image_datalist", "inference_transforms", "run_inference"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")


def image_datalist(inputs: str | os.PathLike | Sequence[str], salt: str | None = None) -> list[dict[str, Any]]:
    """Items ``{"image": path, "id": ...}`` for a folder (recursive), a text file of paths (one per line) or a list.

    Files with an image suffix are listed by their path relative to the folder; a folder without such files is read
    as a DICOM folder (:func:`dicom_folder_datalist`)."""
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
        return [{"image": str(p.resolve()), "id": p.name} for p in paths]
    src = Path(inputs)
    if src.is_file() and src.suffix == ".txt":
        lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip()]
        return [{"image": str((src.parent / ln).resolve()), "id": ln} for ln in lines]
    if not src.is_dir():
        raise FileNotFoundError(f"inference input {src} is neither a folder nor a .txt list of image paths.")
    files = sorted(p for p in src.rglob("*") if p.is_file() and str(p).lower().endswith(IMAGE_SUFFIXES))
    if files:
        return [{"image": str(p.resolve()), "id": str(p.relative_to(src))} for p in files]
    items = dicom_folder_datalist(src, salt=salt)
    if not items:
        raise FileNotFoundError(f"inference input {src} holds no readable image or DICOM file.")
    return items


def inference_transforms(size: int, channels: int = 3) -> Compose:
    """Any 2D source -> float32 (channels, size, size) in [0, 1]: longest side to ``size``, centred zero padding."""
    return Compose([
        LoadDicomFramed(keys="image"),
        ToChannelsd(keys="image", channels=channels),
        Resized(keys="image", spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd(keys="image", spatial_size=(size, size)),
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
    ])


@torch.no_grad()
def run_inference(
    network: Any, templates: InstructionTemplates, datalist: list[dict], transform: Any,
    output_file: str | os.PathLike, batch_size: int = 32, device: str | torch.device = "cpu",
    max_new_tokens: int = 16,
) -> list[dict[str, Any]]:
    """Answer the open-ended question for every image; write CSV (``.csv``) or JSON (otherwise), atomically."""
    from monai.data import DataLoader, Dataset

    network = network.to(device).eval()
    vocab = network.vocabulary
    loader = DataLoader(Dataset(datalist, transform), batch_size=batch_size, shuffle=False, collate_fn=attok_collate)
    question = templates.question("open")
    rows: list[dict[str, Any]] = []
    for batch in loader:
        images = batch["image"].to(device).float()
        prompts = [question] * images.shape[0]
        answers = network.generate(images, prompts, max_new_tokens)
        probs = network.class_probabilities(images, prompts).float().cpu()
        for i, answer in enumerate(answers):
            k = parse_prediction(vocab, answer)
            row = {
                "id": batch["id"][i],
                "question": question,
                "answer": answer,
                "attribute": vocab.token(k) if k >= 0 else "",
                "diagnosis": vocab.names[k] if k >= 0 else "",
                "probability": round(float(probs[i, k]), 4) if k >= 0 else None,
            }
            row.update({f"p_{a.name}": round(float(probs[i, j]), 4) for j, a in enumerate(vocab)})
            rows.append(row)
    write_rows(output_file, rows)
    print(f"[attok] wrote {len(rows)} predictions to {output_file}")
    return rows
