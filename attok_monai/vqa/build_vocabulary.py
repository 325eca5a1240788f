"""Build a VQA attribute vocabulary and per-pair assignment from a dataset, once, with a cache.

Command::

    python -m attok_monai.vqa.build_vocabulary --dataset vqa_rad --root DIR --out OUTDIR \\
        [--extractor lexicon|llm] [--lexicon PATH] [--min-count 5] [--modality rad]

Writes into ``OUTDIR`` (each file complete or absent: temp file + ``os.replace``):

* ``attribute_vocabulary.json``: :meth:`AttributeVocabulary.to_json`, one attribute ``<|{modality}_{concept}|>`` per
  concept seen at least ``min_count`` times (ordered by group, then frequency);
* ``assignments.json``: ``{record id: [attribute token, ...]}`` (every record, possibly with an empty list);
* ``concept_report.md`` and ``concept_report.csv``: concept, group, count, kept;
* ``.cache/extract_<hash>.json``: the raw extractor output, keyed on a hash of the records, the extractor's
  :meth:`~attok_monai.vqa.keywords.KeywordExtractor.cache_key` (lexicon name, version and content hash) and the
  modality; a re-run with the same inputs reuses it instead of extracting again.

Multi-attribute answers then use ``vocab.format_answer([i, j], text)``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attok_monai.attributes import Attribute, AttributeVocabulary
from attok_monai.data.vqa import read_vqa
from attok_monai.fileio import atomic_write_text
from attok_monai.vqa.keywords import GROUPS, KeywordExtractor, LexiconExtractor, LLMExtractor, _get, _record_fingerprint

__all__ = ["BuildResult", "build_vocabulary", "main"]

VOCAB_FILE = "attribute_vocabulary.json"
ASSIGN_FILE = "assignments.json"
REPORT_MD = "concept_report.md"
REPORT_CSV = "concept_report.csv"


@dataclass
class BuildResult:
    """``vocab``; ``assignment`` (id -> tokens); ``counts`` (concept -> pairs, before the threshold);
    ``dropped`` (concepts under ``min_count``); ``cache_hit``; ``cache_file``; ``out_dir``."""

    vocab: AttributeVocabulary
    assignment: dict[str, list[str]]
    counts: Counter
    dropped: list[str]
    cache_hit: bool
    cache_file: Path
    out_dir: Path




def _inputs_hash(records: Sequence[Any], extractor: KeywordExtractor, modality: str) -> str:
    h = hashlib.sha256()
    h.update(f"{extractor.cache_key()}|{modality}\n".encode())
    for r in records:
        h.update("\x1f".join(_record_fingerprint(r)).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:20]


def build_vocabulary(
    records: Sequence[Any],
    extractor: KeywordExtractor | None = None,
    out_dir: str | os.PathLike = ".",
    modality: str = "rad",
    min_count: int = 5,
    use_cache: bool = True,
) -> BuildResult:
    """Run ``extractor`` (default :class:`LexiconExtractor`) over ``records`` once (cached), drop concepts seen in
    fewer than ``min_count`` pairs, write vocabulary, assignments and report to ``out_dir``.

    Raises:
        ValueError: when no concept reaches ``min_count`` (the vocabulary would be empty).
    """
    extractor = extractor or LexiconExtractor()
    out = Path(out_dir)
    cache = out / ".cache" / f"extract_{_inputs_hash(records, extractor, modality)}.json"
    hit = use_cache and cache.is_file()
    if hit:
        raw = json.loads(cache.read_text(encoding="utf-8"))
        extracted: dict[str, list[str]] = raw["extracted"]
        describe: dict[str, dict[str, Any]] = raw["describe"]
    else:
        extracted = extractor.extract_all(records)
        concepts = sorted({c for cs in extracted.values() for c in cs})
        describe = {c: extractor.describe(c) for c in concepts}
        atomic_write_text(
            cache,
            json.dumps({"extractor": extractor.cache_key(), "extracted": extracted, "describe": describe}, indent=1),
        )
    counts: Counter = Counter(c for cs in extracted.values() for c in cs)
    kept = [c for c, n in counts.items() if n >= min_count]
    dropped = sorted(c for c in counts if c not in kept)
    if not kept:
        raise ValueError(
            f"build_vocabulary: no concept is assigned to at least {min_count} pairs ({len(counts)} concepts seen); "
            "lower min_count or check the extractor."
        )
    order = {g: i for i, g in enumerate(GROUPS)}
    kept.sort(key=lambda c: (order.get(describe.get(c, {}).get("group"), len(GROUPS)), -counts[c], c))
    attrs = []
    for c in kept:
        d = describe.get(c, {})
        kws = [k for k in d.get("keywords", []) if str(k).strip()] or [c.replace("_", " ")]
        desc = d.get("description") or (f"{d['group']}" if d.get("group") else None)
        attrs.append(Attribute(modality=modality, concept=c, keywords=tuple(kws), description=desc))
    vocab = AttributeVocabulary(attrs)
    token = {a.concept: a.token for a in vocab.attributes}
    assignment = {
        str(_get(r, "id")): [token[c] for c in extracted.get(str(_get(r, "id")), []) if c in token] for r in records
    }
    vocab.to_json(out / VOCAB_FILE)
    atomic_write_text(out / ASSIGN_FILE, json.dumps(assignment, indent=1))
    _write_report(out, counts, describe, set(kept), min_count, len(records), assignment)
    return BuildResult(vocab, assignment, counts, dropped, hit, cache, out)


def _write_report(
    out: Path,
    counts: Counter,
    describe: dict[str, dict[str, Any]],
    kept: set[str],
    min_count: int,
    n_records: int,
    assignment: dict[str, list[str]],
) -> None:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["concept", "group", "count", "fraction", "kept"])
    for c, n in rows:
        w.writerow([c, describe.get(c, {}).get("group", ""), n, f"{n / max(n_records, 1):.4f}", int(c in kept)])
    atomic_write_text(out / REPORT_CSV, buf.getvalue())
    n_none = sum(1 for v in assignment.values() if not v)
    lines = [
        "# Attribute concept frequencies",
        "",
        f"{n_records} question-answer pairs; {len(counts)} concepts seen; {len(kept)} kept (count >= {min_count}); "
        f"{n_none} pairs with no kept concept.",
        "",
        "| concept | group | count | kept |",
        "|---|---|---:|:---:|",
    ]
    lines += [
        f"| {c} | {describe.get(c, {}).get('group', '')} | {n} | {'yes' if c in kept else 'no'} |" for c, n in rows
    ]
    atomic_write_text(out / REPORT_MD, "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attok_monai.vqa.build_vocabulary", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=["vqa_rad", "slake", "pathvqa"])
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default=None, help="dataset split (vqa_rad: train/test; slake/pathvqa: train/...)")
    p.add_argument("--extractor", default="lexicon", choices=["lexicon", "llm"])
    p.add_argument("--lexicon", default=None, help="lexicon JSON path or packaged name (default radiology_v1)")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--modality", default="rad", help="token modality prefix, e.g. rad -> <|rad_ct|>")
    p.add_argument("--llm-base-url", default=None, help="OpenAI-compatible endpoint (with --extractor llm)")
    p.add_argument("--llm-model", default=None, help="model name at the endpoint")
    p.add_argument("--llm-path", default=None, help="local transformers causal LM folder (with --extractor llm)")
    p.add_argument("--no-cache", action="store_true")
    a = p.parse_args(argv)

    kwargs: dict[str, Any] = {}
    if a.split is not None:
        kwargs["split"] = a.split
    records = read_vqa(a.dataset, a.root, **kwargs)
    if a.extractor == "lexicon":
        extractor: KeywordExtractor = LexiconExtractor(a.lexicon)
    else:
        from attok_monai.vqa.llm import openai_chat, transformers_chat

        if a.llm_base_url:
            chat = openai_chat(a.llm_base_url, a.llm_model or "default")
        elif a.llm_path:
            chat = transformers_chat(a.llm_path)
        else:
            p.error("--extractor llm needs --llm-base-url (+ --llm-model) or --llm-path")
        extractor = LLMExtractor(chat, min_count=1)
    res = build_vocabulary(records, extractor, a.out, a.modality, a.min_count, use_cache=not a.no_cache)
    print(records.report.summary())
    print(
        f"{len(res.vocab)} attributes kept, {len(res.dropped)} dropped (< {a.min_count}); "
        f"cache {'reused' if res.cache_hit else 'written'}: {res.cache_file.name}; wrote {res.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
