"""VQA inference: a CSV of ``image,question`` rows -> a CSV/JSON of answers with their attribute tokens.

Input table columns: ``image`` (path, relative to ``image_root`` or else to the table's folder), ``question``, and
optionally ``id`` (default ``row<N>``). Output rows: ``id, image, question, answer`` (generated text with the attribute
block), ``answer_text`` (the text after the block), ``attributes`` (the attribute tokens, space separated) and
``attribute_names`` (their clinical names, ``; `` separated).

A row whose image is missing or cannot be read, or whose question is empty, is skipped with its reason in
``<output stem>.skipped.csv`` (``id,image,reason``); the run goes on and ends with a one-line summary, and fails only
when no row can be answered. A table without the ``image``/``question`` columns or without rows is an input error.

Domain check per row, as in classification inference (:mod:`attok_monai.engines.domain`; columns
``header_in_domain``, ``prototype_distance``, ``in_domain``, ``domain_note``; counted in the summary): an image
farther from every visual prototype than the threshold set on the validation part (``domain.json`` in the model
folder) is flagged ``in_domain: False``. The VQA loader reads pixels only (JPEG/PNG, no DICOM header), so
``header_in_domain`` is empty (not applicable); a model folder without ``domain.json`` leaves ``in_domain`` empty and
says so in ``domain_note``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from attok_monai.data.instructions import attok_collate
from attok_monai.engines.domain import domain_columns, domain_summary, prototype_distance
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
    device: str | torch.device = "cpu", max_new_tokens: int = 32, domain: Mapping[str, Any] | None = None,
    domain_calibration: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Answer each item's question about its image (greedy); write CSV (``.csv``) or JSON (otherwise), atomically.

    Args:
        domain: the bundle's declared domain (:func:`~attok_monai.engines.domain.bundle_domain`), for the DICOM
            header check (not applicable to this loader's images: ``header_in_domain`` stays empty).
        domain_calibration: :func:`~attok_monai.engines.domain.load_domain_calibration` of the model folder; None:
            no prototype check (``domain_note`` says so).

    Returns:
        rows ``{"id", "image", "question", "answer", "answer_text", "attributes", "attribute_names",
        "header_in_domain", "prototype_distance", "in_domain", "domain_note"}``.
    """
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
        dist = prototype_distance(network, images, domain_calibration) if domain_calibration else None
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
                # no DICOM header through this loader: the header check is not applicable
                **domain_columns("", "", float(dist[i]) if dist is not None else None, domain, domain_calibration),
            })
    skip_file = skip_report_path(output_file)
    if skipped:
        atomic_write_text(skip_file, rows_to_csv(["id", "image", "reason"], skipped))
    elif skip_file.exists():
        skip_file.unlink()  # a stale report of an earlier run would describe other rows
    print(f"[attok] VQA inference: {len(rows) + len(skipped)} question(s): {len(rows)} answered, {len(skipped)} skipped"
          + (f" (reasons in {skip_file})" if skipped else "") + f"; {domain_summary(rows, domain_calibration)}"
          + (f"; answers: {output_file}" if rows else ""))
    if not rows:
        from attok_monai.errors import InputError

        raise InputError(f"VQA inference: none of the {len(skipped)} question(s) could be answered; reasons in "
                         f"{skip_file}.")
    write_rows(output_file, rows)
    return rows
