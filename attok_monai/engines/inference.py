"""Inference: a folder or list of images (DICOM, NIfTI, PNG/JPEG/TIFF/BMP, mixed freely) -> a CSV/JSON of answers.

Every file of the input is accounted for. A file that cannot be read (not an image, truncated, undecodable pixels,
unsupported format) is skipped with its reason in a skip report ``<output stem>.skipped.csv`` and the run goes on;
it ends with a one-line summary (answered, skipped and why, flagged out of domain). The run fails (after writing
what it has) only when no file is readable or when the skipped share exceeds ``max_skipped_fraction``.

Every output row and skip-report row names its file by a stable key: the pseudonymised relative path
(:func:`attok_monai.data.pseudonym.file_key`, the same key an ingest manifest uses) when a salt is set
(``ATTOK_SALT``), else the relative path itself, with a warning that it may hold identifiers.

Domain check per image (:mod:`attok_monai.engines.domain`; counted in the summary; columns ``header_in_domain``,
``prototype_distance``, ``in_domain``, ``domain_note``): a DICOM whose ``Modality`` or ``BodyPartExamined`` contradicts
the bundle's declared domain is flagged, and so is an image farther from every visual prototype than the threshold
set on the validation part (``domain.json`` in the model folder). ``in_domain`` is false when either check flags the
image, empty when neither could run (:func:`attok_monai.engines.domain.domain_columns`, shared with VQA inference).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset
from monai.transforms import Compose, EnsureTyped, MapTransform, Resized, SpatialPadd

from attok_monai.data.image2d import PIL_SUFFIXES, ImageReadError, safe_reason, suffix_of
from attok_monai.data.image_transforms import ToChannelsd
from attok_monai.data.instructions import InstructionTemplates, attok_collate
from attok_monai.data.load2d import LoadDicomFramed
from attok_monai.data.nifti import NIFTI_SUFFIXES
from attok_monai.data.pseudonym import file_key
from attok_monai.engines.domain import domain_columns, domain_summary, prototype_distance
from attok_monai.errors import InputError
from attok_monai.fileio import atomic_write_text, rows_to_csv, write_rows
from attok_monai.metrics import parse_prediction

__all__ = ["IMAGE_SUFFIXES", "NOT_IMAGE_SUFFIXES", "image_datalist", "inference_transforms", "run_inference",
           "skip_report_path"]

logger = logging.getLogger("attok_monai.inference")

IMAGE_SUFFIXES = (*PIL_SUFFIXES, *NIFTI_SUFFIXES)
# known non-image files: listed as skipped without trying a reader (anything else is tried as DICOM)
NOT_IMAGE_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".md", ".xml", ".html", ".pdf", ".npz", ".npy",
                      ".py", ".log", ".zip", ".gz", ".tar", ".doc", ".docx", ".xls", ".xlsx")
UNSUPPORTED = "not a supported image format (DICOM, NIfTI, PNG/JPEG/TIFF/BMP)"
NO_SALT_WARNING = ("no salt (ATTOK_SALT) is set: outputs name each file by its relative path, which may hold patient "
                   "identifiers; set ATTOK_SALT to name files by a pseudonymised key")


def _walk(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".")]
    return out


def image_datalist(inputs: str | os.PathLike | Sequence[str], salt: str | None = None) -> list[dict[str, Any]]:
    """Items ``{"image": absolute path, "id": key, "file": key}`` for every file of a folder (recursive; hidden
    files skipped), of a ``.txt`` list of paths (one per line, relative to the list's folder) or of a list of paths.

    ``key`` is :func:`~attok_monai.data.pseudonym.file_key` of the path relative to the folder when ``salt`` is given,
    else that relative path (a warning says it may hold identifiers). Files with a known non-image suffix get
    ``"skip_reason"`` (they are reported as skipped, not dropped); every other file is tried by
    :func:`~attok_monai.data.load2d.read_image_2d` (PNG/JPEG/TIFF/BMP, NIfTI, else DICOM with any or no suffix).

    Raises:
        FileNotFoundError: the input is neither a folder, a ``.txt`` list nor a list; the folder has no file.
    """
    if isinstance(inputs, (list, tuple)):
        pairs = [(Path(p), Path(p).as_posix()) for p in inputs]
    else:
        src = Path(inputs)
        if src.is_file() and src.suffix == ".txt":
            lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
            pairs = [(src.parent / ln, ln) for ln in lines]
        elif src.is_dir():
            pairs = sorted(((p, p.relative_to(src).as_posix()) for p in _walk(src)), key=lambda pr: pr[1])
        else:
            raise FileNotFoundError(f"inference input {src} is neither a folder nor a .txt list of image paths.")
        if not pairs:
            raise FileNotFoundError(f"inference input {src} holds no file.")
    if not salt:
        warnings.warn(NO_SALT_WARNING, stacklevel=2)
    items = []
    for path, rel in pairs:
        key = file_key(rel, salt) if salt else rel
        item: dict[str, Any] = {"image": os.path.abspath(path), "id": key, "file": key}
        if suffix_of(path) in NOT_IMAGE_SUFFIXES:
            item["skip_reason"] = UNSUPPORTED
        items.append(item)
    return items


class _HeaderFieldsd(MapTransform):
    """Copy the DICOM ``modality`` / ``body_part`` of the loaded image's meta into the item (``""`` for others)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {}) or {}
            d["modality"] = str(meta.get("modality", "") or "")
            d["body_part"] = str(meta.get("body_part", "") or "")
        return d


def inference_transforms(size: int, channels: int = 3, file_timeout: float | None = 60.0) -> Compose:
    """Any 2D source -> float32 (channels, size, size) in [0, 1]: longest side to ``size``, centred zero padding.
    The item also gets ``modality`` and ``body_part`` (DICOM header values; ``""`` for other formats). A file whose
    reading takes longer than ``file_timeout`` seconds fails (main process only), so one pathological file cannot
    hang a run."""
    return Compose([
        LoadDicomFramed(keys="image", timeout=file_timeout),
        _HeaderFieldsd(keys="image"),
        ToChannelsd(keys="image", channels=channels),
        Resized(keys="image", spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd(keys="image", spatial_size=(size, size)),
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
    ])


class _GuardedDataset(Dataset):
    """A MONAI Dataset whose items that cannot be read become ``{"id", "file", "_error": reason}``."""

    def _transform(self, index: int) -> Any:
        item = self.data[index]
        if item.get("skip_reason"):
            return {"id": item["id"], "file": item.get("file", item["id"]), "_error": item["skip_reason"]}
        try:
            return super()._transform(index)
        except Exception as e:  # one bad file never stops the run: its reason goes to the skip report
            return {"id": item["id"], "file": item.get("file", item["id"]), "_error": _reason_of(e)}


def _reason_of(exc: BaseException) -> str:
    """The reader's reason (no path) from an exception, unwrapping MONAI's transform wrapper."""
    seen = exc
    while seen is not None:
        if isinstance(seen, ImageReadError):
            return seen.reason
        seen = seen.__cause__ or seen.__context__
    return safe_reason(exc)


def _split_collate(batch: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any] | None, list[Mapping[str, Any]]]:
    good = [b for b in batch if "_error" not in b]
    return (attok_collate(good) if good else None), [b for b in batch if "_error" in b]


def skip_report_path(output_file: str | os.PathLike) -> Path:
    """``<output folder>/<output stem>.skipped.csv``."""
    p = Path(output_file)
    return p.with_name(p.name.rsplit(".", 1)[0] + ".skipped.csv")


# ---------------------------------------------------------------------------------------------------- the run
def _short(reason: str) -> str:
    """The reason's category for the summary (the text before the first ':' or '(')."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


@torch.no_grad()
def run_inference(
    network: Any, templates: InstructionTemplates, datalist: list[dict], transform: Any,
    output_file: str | os.PathLike, batch_size: int = 32, device: str | torch.device = "cpu",
    max_new_tokens: int = 16, max_skipped_fraction: float | None = None, domain: Mapping[str, Any] | None = None,
    domain_calibration: Mapping[str, Any] | None = None, num_workers: int = 0, save_maps: bool = False,
    screen: bool = False, temperature: float | None = None,
) -> list[dict[str, Any]]:
    """Answer the open-ended question for every readable image; write the answers (CSV for ``.csv``, else JSON) and,
    when a file was skipped, the skip report ``<output stem>.skipped.csv`` (``file,reason``), atomically; print and
    log a one-line summary.

    Args:
        network: an ``AttTokGPTv``-like model (``generate``, ``class_probabilities``, ``vocabulary``).
        templates: the instruction templates (the open question is asked).
        datalist: items of :func:`image_datalist`.
        transform: :func:`inference_transforms`.
        output_file: where the answers go.
        max_skipped_fraction: fail (after writing) when more than this share of the files is skipped (None: never,
            unless nothing is readable).
        domain: the bundle's declared domain (:func:`~attok_monai.engines.domain.bundle_domain`) for the DICOM
            header check.
        domain_calibration: :func:`~attok_monai.engines.domain.load_domain_calibration` of the model folder; None:
            no prototype check.
        screen: one-pass screening: no text is generated; the class is the most probable attribute of one forward
            (the attribute-token logits at the decision position, :meth:`class_probabilities`), and the book
            retrieval's choice is given beside it (``retrieval_attribute``, ``retrieval_score``; not for a model
            without attribute tokens). The table is the same minus ``answer``.
        temperature: the model folder's fitted temperature (``temperature.json``), applied to the class
            probabilities (the predicted class is unchanged; None: the raw probabilities).
        save_maps: also write, per answered image, the ACC attention map to the predicted attribute's book over the
            image, titled with its clinical name: ``<output stem>_maps/<id>.png`` (models with ACC only; ``map``
            column = the PNG's name).

    Returns:
        the answer rows ``{"id", "file", "question", "answer", "attribute", "diagnosis", "probability",
        "p_<name>"..., "header_in_domain", "prototype_distance", "in_domain", "domain_note"}``.

    Raises:
        InputError: no file readable, or the skipped share above ``max_skipped_fraction`` (outputs written first);
            ``save_maps`` or ``screen`` not a bool (checked before anything is read).
    """
    from monai.data import DataLoader

    from attok_monai.errors import check_flags

    check_flags(save_maps=save_maps, screen=screen)  # the text "false" from MONAI's CLI would be truthy

    network = network.to(device).eval()
    vocab = network.vocabulary
    loader = DataLoader(_GuardedDataset(datalist, transform), batch_size=batch_size, shuffle=False,
                        collate_fn=_split_collate, num_workers=num_workers)
    question = templates.question("open")
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for good, bad in loader:
        skipped += [{"file": b["file"], "reason": b["_error"]} for b in bad]
        if good is None:
            continue
        images = good["image"].to(device).float()
        prompts = [question] * images.shape[0]
        if screen:  # one forward: the vision side once for both scores, no decoding
            probs, retrieval = network.screen(images, prompts)
            probs = probs.float().cpu()
            retrieval = None if retrieval is None else retrieval.float().cpu()
            answers = [None] * images.shape[0]
        else:
            answers, retrieval = network.generate(images, prompts, max_new_tokens), None
            probs = network.class_probabilities(images, prompts).float().cpu()
        if temperature is not None:
            from attok_monai.handlers.temperature import apply_temperature

            probs = apply_temperature(probs, temperature)
        dist = prototype_distance(network, images, domain_calibration) if domain_calibration else None
        map_names = _save_maps(network, images, good["id"], probs, output_file) if save_maps else None
        for i, answer in enumerate(answers):
            k = int(probs[i].argmax()) if screen else parse_prediction(vocab, answer)
            row = {
                "id": good["id"][i],
                "file": good["file"][i],
                "question": question,
                **({} if screen else {"answer": answer}),
                "attribute": vocab.token(k) if k >= 0 else "",
                "diagnosis": vocab.names[k] if k >= 0 else "",
                "probability": round(float(probs[i, k]), 4) if k >= 0 else None,
            }
            row.update({f"p_{a.name}": round(float(probs[i, j]), 4) for j, a in enumerate(vocab)})
            if retrieval is not None:
                r = int(retrieval[i].argmax())
                row.update(retrieval_attribute=vocab.token(r), retrieval_score=round(float(retrieval[i, r]), 4))
            if map_names is not None:
                row["map"] = map_names[i]
            row.update(domain_columns(good["modality"][i], good["body_part"][i],
                                      float(dist[i]) if dist is not None else None, domain, domain_calibration))
            rows.append(row)
    total = len(rows) + len(skipped)
    if rows:
        write_rows(output_file, rows)
    skip_file = skip_report_path(output_file)
    if skipped:
        atomic_write_text(skip_file, rows_to_csv(["file", "reason"], skipped))
    elif skip_file.exists():
        skip_file.unlink()  # a stale report of an earlier run would describe other files
    why = Counter(_short(s["reason"]) for s in skipped)
    summary = (f"[attok] inference: {total} file(s): {len(rows)} answered, {len(skipped)} skipped"
               + (f" ({', '.join(f'{n} {r}' for r, n in why.most_common())})" if skipped else "")
               + f"; {domain_summary(rows, domain_calibration)}"
               + (f"; answers: {output_file}" if rows else "")
               + (f"; skip report: {skip_file}" if skipped else ""))
    print(summary)
    logger.info(summary)
    if not rows:
        raise InputError(f"inference: none of the {total} input file(s) could be read"
                         + (f"; reasons in {skip_file}" if skipped else "") + ".")
    if max_skipped_fraction is not None and len(skipped) > max_skipped_fraction * total:
        raise InputError(f"inference: {len(skipped)} of {total} file(s) skipped ({len(skipped) / total:.0%}), more "
                         f"than max_skipped_fraction {max_skipped_fraction:g}; reasons in {skip_file}.")
    return rows


def _save_maps(network: Any, images: torch.Tensor, ids: Sequence[str], probs: torch.Tensor,
               output_file: str | os.PathLike) -> list[str]:
    """One attention-map PNG per image (to its most probable attribute) in ``<output stem>_maps/``; their names."""
    from attok_monai.engines.attention_maps import attention_maps, save_attention_maps

    if getattr(network, "acc", None) is None:
        raise InputError("--save_maps: this model has no ACC adapter (use_acc=False), so it has no attention maps.")
    folder = Path(output_file).with_suffix("")
    folder = folder.with_name(folder.name + "_maps")
    maps, attrs = attention_maps(network, images, probs.argmax(1))
    names = []
    for i, key in enumerate(ids):
        name = str(key).replace(os.sep, "__").replace("/", "__") + ".png"
        save_attention_maps(images[i: i + 1], maps[i: i + 1], [network.vocabulary.names[int(attrs[i])]], folder / name)
        names.append(name)
    return names
