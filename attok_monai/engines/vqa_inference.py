"""VQA inference: a CSV of ``image,question`` rows -> a CSV/JSON of answers with their attribute tokens.

Input table columns: ``image`` (path, relative to ``image_root`` or else to the table's folder), ``question``, and
optionally ``id`` (default ``row<N>``). Output rows: ``id, image, question, answer`` (generated text with the attribute
block), ``answer_text`` (the text after the block), ``attributes`` (the attribute tokens, space separated) and
``attribute_names`` (their clinical names, ``; `` separated).

A row whose image is missing or cannot be read, or whose question is empty, is skipped with its reason in
``<output stem>.skipped.csv`` (``id,image,reason``); the run goes on and ends with a one-line summary, and fails only
when no row can be answered. A table without the ``image``/``question`` columns or without rows is an input error.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from attok_monai.data.instructions import attok_collate
from attok_monai.engines.vqa_steps import detokenize
from attok_monai.fileio import atomic_write_text, rows_to_csv, write_rows
from attok_monai.vqa.datalists import preload_images

__all__ = ["question_table_datalist", "run_vqa_inference"]


def question_table_datalist(table: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[dict]:
    """Items ``{"image": path, "question", "id", "image_name"}`` from a CSV with ``image`` and ``question`` columns;
    a row with an empty question or a missing image file gets ``"skip_reason"`` (reported, not dropped).

    Raises:
        InputError: the table is missing, lacks a column, or has no rows.
    """
    from attok_monai.errors import InputError

    table = Path(table)
    if not table.is_file():
        raise InputError(f"question table {table} not found (CSV with columns image,question).")
    root = Path(image_root) if image_root else table.parent
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"image", "question"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{table}: missing column(s) {sorted(missing)}; expected image,question[,id].")
        items = []
        for n, row in enumerate(reader, start=2):
            question = (row.get("question") or "").strip()
            rel = (row.get("image") or "").strip()
            path = Path(rel) if Path(rel).is_absolute() else root / rel
            item = {"image": str(path), "question": question, "id": (row.get("id") or "").strip() or f"row{n}",
                    "image_name": rel}
            if not question:
                item["skip_reason"] = f"row {n}: empty question"
            elif not rel or not path.is_file():
                item["skip_reason"] = f"row {n}: image file not found"
            items.append(item)
    if not items:
        raise InputError(f"{table}: no rows (expected a header image,question[,id] and one row per question).")
    return items


@torch.no_grad()
def run_vqa_inference(
    network: Any, datalist: list[dict], transform: Any, output_file: str | os.PathLike, batch_size: int = 32,
    device: str | torch.device = "cpu", max_new_tokens: int = 32,
) -> list[dict[str, Any]]:
    """Answer each item's question about its image (greedy); write CSV (``.csv``) or JSON (otherwise), atomically."""
    from attok_monai.data.image2d import safe_reason
    from attok_monai.engines.inference import skip_report_path

    network = network.to(device).eval()
    vocab = network.vocabulary
    unreadable: list[dict[str, Any]] = []  # one unreadable image never ends the run
    items = preload_images([it for it in datalist if not it.get("skip_reason")], transform, skipped=unreadable)
    reasons = {id(u["item"]): safe_reason(u["error"]) for u in unreadable}
    skipped = [{"id": it["id"], "image": it.get("image_name", ""), "reason": it.get("skip_reason") or reasons[id(it)]}
               for it in datalist if it.get("skip_reason") or id(it) in reasons]  # in the table's order
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
    skip_file = skip_report_path(output_file)
    if skipped:
        atomic_write_text(skip_file, rows_to_csv(["id", "image", "reason"], skipped))
    elif skip_file.exists():
        skip_file.unlink()  # a stale report of an earlier run would describe other rows
    print(f"[attok] VQA inference: {len(rows) + len(skipped)} question(s): {len(rows)} answered, {len(skipped)} skipped"
          + (f" (reasons in {skip_file})" if skipped else "") + (f"; answers: {output_file}" if rows else ""))
    if not rows:
        from attok_monai.errors import InputError

        raise InputError(f"VQA inference: none of the {len(skipped)} question(s) could be answered; reasons in "
                         f"{skip_file}.")
    write_rows(output_file, rows)
    return rows
