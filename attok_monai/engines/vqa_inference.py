"""VQA inference: a CSV of ``image,question`` rows -> a CSV/JSON of answers with their attribute tokens.

Input table columns: ``image`` (path, relative to ``image_root`` or else to the table's folder), ``question``, and
optionally ``id`` (default ``row<N>``). Output rows: ``id, image, question, answer`` (generated text with the attribute
block), ``answer_text`` (the text after the block), ``attributes`` (the attribute tokens, space separated) and
``attribute_names`` (their clinical names, ``; `` separated).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from attok_monai.data.instructions import attok_collate
from attok_monai.engines.vqa_steps import detokenize
from attok_monai.fileio import write_rows
from attok_monai.vqa.datalists import preload_images

__all__ = ["question_table_datalist", "run_vqa_inference"]


def question_table_datalist(table: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[dict]:
    """Items ``{"image": path, "question", "id"}`` from a CSV with ``image`` and ``question`` columns.

    Raises:
        FileNotFoundError: the table, or an image it names (with the row number), does not exist.
        ValueError: a missing column or an empty question (naming the row).
    """
    table = Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"question table {table} not found (CSV with columns image,question).")
    root = Path(image_root) if image_root else table.parent
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image", "question"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{table}: missing column(s) {sorted(missing)}; expected image,question[,id].")
        items = []
        for n, row in enumerate(reader, start=2):
            question = (row.get("question") or "").strip()
            if not question:
                raise ValueError(f"{table} row {n}: empty 'question'.")
            rel = (row.get("image") or "").strip()
            path = Path(rel) if Path(rel).is_absolute() else root / rel
            if not rel or not path.is_file():
                raise FileNotFoundError(f"{table} row {n}: image file {path} not found.")
            items.append({"image": str(path), "question": question, "id": (row.get("id") or "").strip() or f"row{n}",
                          "image_name": rel})
    if not items:
        raise ValueError(f"{table}: no rows.")
    return items


@torch.no_grad()
def run_vqa_inference(
    network: Any, datalist: list[dict], transform: Any, output_file: str | os.PathLike, batch_size: int = 32,
    device: str | torch.device = "cpu", max_new_tokens: int = 32,
) -> list[dict[str, Any]]:
    """Answer each item's question about its image (greedy); write CSV (``.csv``) or JSON (otherwise), atomically."""
    network = network.to(device).eval()
    vocab = network.vocabulary
    items = preload_images(datalist, transform)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        batch = attok_collate(items[start : start + batch_size])
        images = batch["image"].to(device).float()
        answers = [detokenize(t) for t in network.generate(images, batch["question"], max_new_tokens)]
        for i, answer in enumerate(answers):
            parsed = vocab.parse_answer(answer)
            rows.append({
                "id": batch["id"][i],
                "image": batch.get("image_name", batch["image_path"])[i],
                "question": batch["question"][i],
                "answer": answer,
                "answer_text": parsed.text,
                "attributes": " ".join(vocab.token(k) for k in parsed.indices),
                "attribute_names": "; ".join(vocab.names[k] for k in parsed.indices),
            })
    write_rows(output_file, rows)
    print(f"[attok] wrote {len(rows)} answers to {output_file}")
    return rows
