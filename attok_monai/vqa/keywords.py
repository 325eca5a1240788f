"""Attribute keywords for VQA pairs (AttTok appendix A.2 and section 5.5).

Each question-answer pair gets zero or more *concepts* (canonical names such as ``"ct"``, ``"pleural_effusion"``,
``"lung"``) for the discriminative, conclusive content it states: imaging modality, normal/abnormal status,
disease or finding names, anatomical site/organ. Positions, sizes, colours, shapes and counts are never concepts.

Extractors share the :class:`KeywordExtractor` interface (``extract(record) -> list[str]``):

* :class:`LexiconExtractor` (default, offline): a curated, versioned lexicon JSON (package data
  ``lexicons/radiology_v1.json``) matched word-boundary aware, longest phrase first, on the normalised question and
  answer, plus the dataset's own auxiliary fields (VQA-RAD ``image_organ``; SLAKE ``modality``, ``location``).
* :class:`LLMExtractor`: the paper's LLM workflow (propose candidates per pair -> filter/merge into a small
  vocabulary -> assign back), over any chat function (:mod:`attok_monai.vqa.llm`). Off by default.

**Negation rule (documented decision).** The paper assigns *conclusive* concepts only. For a question answered
"no" (leading "no"/"not"/"none"/...):

* a *finding* named in the question is not stated, so it is dropped and the pair gets the lexicon's
  ``negated_finding_concept`` (``no_finding``) instead; we do not use ``normal`` here, because "no pneumothorax"
  does not say the image is normal (it may show an effusion), and ``normal`` must keep its meaning for ABN questions;
* a *status* concept flips to its ``opposite`` ("Are the lungs normal? No" -> ``abnormal``);
* a *modality* named in the question is dropped ("Is this an MRI? No" states no modality);
* an *organ* stays (the anatomical site of the question is still the site shown).

"Not sure"/"maybe" answers keep only the question's organs. When the answer itself names concepts of a group
(choice questions such as "CT or MRI? CT", "liver or kidney? liver"), the question's concepts of that group are
replaced by the answer's; in a choice question the alternatives next to "or" that the answer does not name are
dropped ("Is the hila normal or enlarged? Enlarged" states no status; "Is the lesion right or left? Left" keeps
``lesion``). Concepts come out ordered by group (modality, status, finding, organ), then by first
appearance.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from attok_monai.attributes import normalize_text
from attok_monai.vqa.llm import ChatFn, load_prompt, parse_json_response, prompt_hash, render_prompt

__all__ = [
    "KeywordExtractor",
    "Lexicon",
    "LexiconEntry",
    "LexiconExtractor",
    "LLMExtractor",
    "DEFAULT_LEXICON",
    "GROUPS",
    "answer_polarity",
    "concept_slug",
]

DEFAULT_LEXICON = "radiology_v1"
GROUPS = ("modality", "status", "finding", "organ")


def concept_slug(text: str) -> str:
    """``"Pleural effusion"`` -> ``"pleural_effusion"`` (the vocabulary's ``[a-z0-9_]`` concept names)."""
    return "_".join(normalize_text(text).split())


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def _record_fingerprint(record: Any) -> tuple:
    return tuple(
        str(_get(record, k, "")) for k in ("id", "question", "answer", "answer_type", "organ", "modality", "location")
    )


class KeywordExtractor(ABC):
    """Maps a VQA record (:class:`~attok_monai.data.vqa.VQARecord` or dict with ``question, answer, answer_type``
    and optional ``organ, modality, location``) to canonical concept names."""

    name: str = "extractor"

    @abstractmethod
    def extract(self, record: Any) -> list[str]:
        """Canonical concept names (``[a-z0-9_]``) stated by the pair; may be empty."""

    def extract_all(self, records: Sequence[Any]) -> dict[str, list[str]]:
        """``{record id: concepts}`` for all records."""
        return {str(_get(r, "id")): self.extract(r) for r in records}

    def describe(self, concept: str) -> dict[str, Any]:
        """``{"keywords": [...], "group": ..., "description": ...}`` for the vocabulary (keywords: clinical name
        first)."""
        return {"keywords": [concept.replace("_", " ")]}

    @abstractmethod
    def cache_key(self) -> str:
        """A string that changes whenever the extractor's output could change (name, version, content hash)."""


# ---------------------------------------------------------------------------------------------------- lexicon
@dataclass(frozen=True)
class LexiconEntry:
    concept: str
    group: str
    keywords: tuple[str, ...]
    description: str | None = None
    opposite: str | None = None


class Lexicon:
    """A curated concept lexicon (see ``lexicons/radiology_v1.json`` for the schema).

    Keys: ``name``, ``version``, ``concepts`` (``[{"concept", "group", "keywords", "description"?, "opposite"?}]``),
    ``negated_finding_concept``, ``yes_words``, ``no_words``, ``unsure_words``, ``aux_values``
    (``{"organ"|"modality": {normalised field value: [concepts]}}``) and ``blocked_words`` (positions, sizes,
    colours, counts: a keyword made only of these words is rejected at load time).

    Raises:
        ValueError: naming the file and entry for an unknown group, a bad concept name, an empty or blocked
            keyword, a keyword given to two concepts, or a reference to an unknown concept.
    """

    def __init__(self, data: Mapping[str, Any], source: str = "<dict>") -> None:
        self.source = source
        self.raw = dict(data)
        self.name = str(data.get("name", "lexicon"))
        self.version = str(data.get("version", "0"))
        self.blocked_words = frozenset(normalize_text(w) for w in data.get("blocked_words", []))
        self.yes_words = tuple(normalize_text(w) for w in data.get("yes_words", ["yes"]))
        self.no_words = tuple(normalize_text(w) for w in data.get("no_words", ["no"]))
        self.unsure_words = tuple(normalize_text(w) for w in data.get("unsure_words", ["not sure"]))
        self.entries: dict[str, LexiconEntry] = {}
        self._index: dict[tuple[str, ...], str] = {}
        explicit: dict[tuple[str, ...], str] = {}
        concepts = data.get("concepts")
        if not isinstance(concepts, list) or not concepts:
            raise ValueError(f"Lexicon {source}: expected a non-empty 'concepts' list.")
        for i, c in enumerate(concepts):
            where = f"Lexicon {source}: concept {i} ({c.get('concept')!r})"
            concept, group = c.get("concept"), c.get("group")
            if not isinstance(concept, str) or not re.fullmatch(r"[a-z0-9_]+", concept):
                raise ValueError(f"{where}: concept must be lower-case [a-z0-9_]+.")
            if concept in self.entries:
                raise ValueError(f"{where}: duplicate concept.")
            if group not in GROUPS:
                raise ValueError(f"{where}: group {group!r}; expected one of {GROUPS}.")
            kws = c.get("keywords") or []
            if not kws:
                raise ValueError(f"{where}: needs at least one keyword.")
            for kw in kws:
                toks = tuple(normalize_text(kw).split())
                if not toks:
                    raise ValueError(f"{where}: empty keyword {kw!r}.")
                if all(t in self.blocked_words or t.isdigit() for t in toks):
                    raise ValueError(f"{where}: keyword {kw!r} is only positions/sizes/colours/counts (blocked).")
                if toks in explicit and explicit[toks] != concept:
                    raise ValueError(f"{where}: keyword {kw!r} already belongs to concept {explicit[toks]!r}.")
                explicit[toks] = concept
            self.entries[concept] = LexiconEntry(concept, group, tuple(kws), c.get("description"), c.get("opposite"))
        # plural/singular variants of the last word, never overriding an explicit keyword
        self._index = dict(explicit)
        for toks, concept in explicit.items():
            last = toks[-1]
            for var in (last + "s", last + "es", last[:-1] + "ies" if last.endswith("y") else None):
                if var and len(last) > 2 and (toks[:-1] + (var,)) not in self._index:
                    self._index[toks[:-1] + (var,)] = concept
        self._max_len = max(len(t) for t in self._index)
        self.negated_finding_concept = data.get("negated_finding_concept")
        for c in [self.negated_finding_concept] + [e.opposite for e in self.entries.values()]:
            if c is not None and c not in self.entries:
                raise ValueError(f"Lexicon {source}: refers to unknown concept {c!r}.")
        self.aux_values: dict[str, dict[str, list[str]]] = {}
        for fld, mapping in (data.get("aux_values") or {}).items():
            self.aux_values[fld] = {}
            for value, cs in mapping.items():
                for c in cs:
                    if c not in self.entries:
                        raise ValueError(f"Lexicon {source}: aux_values[{fld}][{value}] names unknown concept {c!r}.")
                self.aux_values[fld][normalize_text(value)] = list(cs)
        self.sha256 = hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode("utf-8")).hexdigest()

    @classmethod
    def load(cls, path_or_name: str | os.PathLike | None = None) -> Lexicon:
        """Load a lexicon file, or a packaged lexicon by name (default ``radiology_v1``)."""
        if path_or_name is None:
            path_or_name = DEFAULT_LEXICON
        p = Path(path_or_name)
        if p.suffix == ".json" or p.exists():
            try:
                return cls(json.loads(p.read_text(encoding="utf-8")), source=str(p))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"Lexicon: cannot read {p}: {e}") from e
        res = resources.files("attok_monai.vqa").joinpath("lexicons", f"{path_or_name}.json")
        if not res.is_file():
            raise ValueError(f"Lexicon: no file {p} and no packaged lexicon named {path_or_name!r}.")
        return cls(json.loads(res.read_text(encoding="utf-8")), source=f"package:{path_or_name}")

    def group(self, concept: str) -> str:
        return self.entries[concept].group

    def match_spans(self, text: str) -> tuple[list[str], list[tuple[str, int, int]]]:
        """Normalised tokens of ``text`` and the ``(concept, start, end)`` token spans matched in it: whole words,
        longest phrase first (``"pleural effusion"`` consumes ``"effusion"``)."""
        toks = normalize_text(text).split()
        spans: list[tuple[str, int, int]] = []
        i = 0
        while i < len(toks):
            for n in range(min(self._max_len, len(toks) - i), 0, -1):
                c = self._index.get(tuple(toks[i : i + n]))
                if c is not None:
                    spans.append((c, i, i + n))
                    i += n
                    break
            else:
                i += 1
        return toks, spans

    def match(self, text: str, groups: Iterable[str] | None = None) -> list[str]:
        """Concepts named in ``text`` (see :meth:`match_spans`), optionally only of ``groups``; duplicates removed,
        in order of appearance."""
        keep = set(groups) if groups is not None else None
        out: list[str] = []
        for c, _, _ in self.match_spans(text)[1]:
            if (keep is None or self.entries[c].group in keep) and c not in out:
                out.append(c)
        return out


def answer_polarity(answer: str, lexicon: Lexicon | None = None) -> str | None:
    """``"yes"``, ``"no"``, ``"unsure"`` from the answer's leading words, else None (a content answer)."""
    norm = normalize_text(answer)
    if not norm:
        return None
    yes = lexicon.yes_words if lexicon else ("yes",)
    no = lexicon.no_words if lexicon else ("no",)
    unsure = lexicon.unsure_words if lexicon else ("not sure",)
    padded = norm + " "
    if any(padded.startswith(u + " ") for u in unsure):
        return "unsure"
    first = norm.split()[0]
    if first in yes:
        return "yes"
    if first in no:
        return "no"
    return None


class LexiconExtractor(KeywordExtractor):
    """Offline keyword extractor over a :class:`Lexicon` (default: packaged ``radiology_v1``).

    Args:
        lexicon: a :class:`Lexicon`, a lexicon JSON path, or a packaged name.
        use_aux: add concepts from the record's auxiliary fields (``organ``, ``location``, ``modality``).

    See the module docstring for the negation rule.
    """

    name = "lexicon"

    def __init__(self, lexicon: Lexicon | str | os.PathLike | None = None, use_aux: bool = True) -> None:
        self.lexicon = lexicon if isinstance(lexicon, Lexicon) else Lexicon.load(lexicon)
        self.use_aux = use_aux

    def cache_key(self) -> str:
        lx = self.lexicon
        return f"lexicon:{lx.name}:{lx.version}:{lx.sha256[:16]}:aux={int(self.use_aux)}"

    def describe(self, concept: str) -> dict[str, Any]:
        e = self.lexicon.entries.get(concept)
        if e is None:
            return super().describe(concept)
        out: dict[str, Any] = {"keywords": list(e.keywords), "group": e.group}
        if e.description:
            out["description"] = e.description
        return out

    def aux_concepts(self, record: Any) -> list[str]:
        """Concepts from the dataset's own fields: organ/location -> organ group, modality -> modality group."""
        out: list[str] = []
        lx = self.lexicon
        for fld, group, table in (
            ("organ", "organ", "organ"),
            ("location", "organ", "organ"),
            ("modality", "modality", "modality"),
        ):
            value = _get(record, fld)
            if not value:
                continue
            norm = normalize_text(str(value))
            cs = lx.aux_values.get(table, {}).get(norm)
            if cs is None:
                cs = lx.match(norm, groups=[group])
            out += [c for c in cs if c not in out]
        return out

    def extract(self, record: Any) -> list[str]:
        lx = self.lexicon
        question = str(_get(record, "question", "") or "")
        answer = str(_get(record, "answer", "") or "")
        q_toks, q_spans = lx.match_spans(question)
        q = list(dict.fromkeys(c for c, _, _ in q_spans))
        alternatives = {c for c, i, j in q_spans if _next_to_or(q_toks, i, j)}
        a = lx.match(answer)
        pol = answer_polarity(answer, lx)
        picked: list[str] = self.aux_concepts(record) if self.use_aux else []
        if pol == "yes":
            picked += q
        elif pol == "no":
            for c in q:
                e = lx.entries[c]
                if e.group == "organ":
                    picked.append(c)
                elif e.group == "status" and e.opposite:
                    picked.append(e.opposite)
                elif e.group == "finding" and lx.negated_finding_concept:
                    picked.append(lx.negated_finding_concept)
        elif pol == "unsure":
            picked += [c for c in q if lx.entries[c].group == "organ"]
        else:
            answered = {lx.entries[c].group for c in a}
            picked += [c for c in q if lx.entries[c].group not in answered and c not in alternatives]
        picked += a
        seen: list[str] = []
        for c in picked:
            if c not in seen:
                seen.append(c)
        order = {g: i for i, g in enumerate(GROUPS)}
        return sorted(seen, key=lambda c: order[lx.entries[c].group])  # stable: appearance within a group


def _next_to_or(toks: list[str], start: int, end: int) -> bool:
    """Whether the phrase ``toks[start:end]`` is an alternative of an "X or Y" choice (articles skipped)."""
    before = [t for t in toks[:start] if t not in ("a", "an", "the")]
    after = [t for t in toks[end:] if t not in ("a", "an", "the")]
    return (bool(before) and before[-1] == "or") or (bool(after) and after[0] == "or")


# ---------------------------------------------------------------------------------------------------- LLM
def _aux_text(record: Any) -> str:
    parts = [f"{k}: {_get(record, k)}" for k in ("organ", "modality", "location") if _get(record, k)]
    return "; ".join(parts) if parts else "none"


class LLMExtractor(KeywordExtractor):
    """The paper's LLM keyword workflow (appendix A.2, figure 4) over a chat function.

    Stage 1 (:meth:`propose`): for each pair, the LLM rewrites it as a declarative sentence and proposes candidate
    keywords (prompt ``propose.txt``). Stage 2 (:meth:`fit`): candidates are counted, non-discriminative ones
    (only positions/sizes/colours/counts, per the lexicon's ``blocked_words``) and those below ``min_count`` are
    dropped, and the LLM merges synonyms into at most ``max_concepts`` canonical concepts (``merge.txt``; if its
    reply cannot be parsed, each kept candidate is its own concept). Stage 3 (:meth:`extract`): the LLM assigns
    concepts from that vocabulary back to each pair (``assign.txt``); replies outside the vocabulary are ignored.

    Args:
        chat: ``chat(messages) -> str`` (:func:`~attok_monai.vqa.llm.openai_chat`,
            :func:`~attok_monai.vqa.llm.transformers_chat`, or a stub in tests).
        model_name: recorded in the cache key (defaults to ``chat.model_name`` or ``"llm"``).
        min_count, max_concepts: stage-2 filters.
        prompts_dir: folder with ``propose.txt``, ``merge.txt``, ``assign.txt`` (default: the packaged prompts).
        blocked_words: words that never make a concept (default: those of the packaged lexicon).
    """

    name = "llm"

    def __init__(
        self,
        chat: ChatFn,
        model_name: str | None = None,
        min_count: int = 1,
        max_concepts: int = 64,
        prompts_dir: str | os.PathLike | None = None,
        blocked_words: Iterable[str] | None = None,
    ) -> None:
        self.chat = chat
        self.model_name = model_name or getattr(chat, "model_name", "llm")
        self.min_count = int(min_count)
        self.max_concepts = int(max_concepts)
        self.prompts = {n: load_prompt(n, prompts_dir) for n in ("propose", "merge", "assign")}
        if blocked_words is None:
            blocked_words = Lexicon.load().blocked_words
        self.blocked_words = frozenset(normalize_text(w) for w in blocked_words)
        self.vocabulary: dict[str, list[str]] | None = None  # concept slug -> keywords (clinical name first)
        self.candidate_counts: Counter = Counter()

    def cache_key(self) -> str:
        return (
            f"llm:{self.model_name}:{prompt_hash(*self.prompts.values())}:min={self.min_count}:max={self.max_concepts}"
        )

    def _ask(self, prompt: str) -> str:
        return self.chat([{"role": "user", "content": prompt}])

    def _blocked(self, keyword: str) -> bool:
        toks = normalize_text(keyword).split()
        return not toks or all(t in self.blocked_words or t.isdigit() for t in toks)

    def propose(self, record: Any) -> list[str]:
        """Stage 1: candidate keywords (normalised text) for one pair."""
        prompt = render_prompt(
            self.prompts["propose"],
            question=_get(record, "question", ""),
            answer=_get(record, "answer", ""),
            aux=_aux_text(record),
        )
        reply = parse_json_response(self._ask(prompt))
        kws = reply.get("keywords", []) if isinstance(reply, Mapping) else reply if isinstance(reply, list) else []
        out: list[str] = []
        for k in kws:
            n = normalize_text(str(k))
            if n and not self._blocked(n) and n not in out:
                out.append(n)
        return out

    def fit(self, records: Sequence[Any]) -> dict[str, list[str]]:
        """Stages 1+2: propose for every pair, filter, merge; sets and returns :attr:`vocabulary`."""
        counts: Counter = Counter()
        for r in records:
            counts.update(self.propose(r))
        self.candidate_counts = counts
        kept = [k for k, n in counts.most_common() if n >= self.min_count]
        vocab: dict[str, list[str]] = {}
        if kept:
            listing = "\n".join(f"{k}: {counts[k]}" for k in kept)
            reply = parse_json_response(
                self._ask(render_prompt(self.prompts["merge"], candidates=listing, max_concepts=self.max_concepts))
            )
            if isinstance(reply, Mapping):
                for canon, syns in reply.items():
                    slug = concept_slug(str(canon))
                    if not slug or self._blocked(slug) or slug in vocab:
                        continue
                    names = [normalize_text(str(canon))]
                    names += [n for n in (normalize_text(str(s)) for s in (syns or [])) if n and n not in names]
                    vocab[slug] = names
            if not vocab:
                vocab = {concept_slug(k): [k] for k in kept}
        self.vocabulary = dict(list(vocab.items())[: self.max_concepts])
        return self.vocabulary

    def describe(self, concept: str) -> dict[str, Any]:
        if self.vocabulary and concept in self.vocabulary:
            return {"keywords": list(self.vocabulary[concept])}
        return super().describe(concept)

    def extract(self, record: Any) -> list[str]:
        """Stage 3: concepts from the fitted vocabulary for one pair (call :meth:`fit` first)."""
        if self.vocabulary is None:
            raise RuntimeError("LLMExtractor.extract: no vocabulary yet; call fit(records) first (stages 1 and 2).")
        if not self.vocabulary:
            return []
        lookup = {normalize_text(s): c for c, syns in self.vocabulary.items() for s in [c.replace("_", " "), *syns]}
        prompt = render_prompt(
            self.prompts["assign"],
            vocabulary=", ".join(s[0] for s in self.vocabulary.values()),
            question=_get(record, "question", ""),
            answer=_get(record, "answer", ""),
            aux=_aux_text(record),
        )
        reply = parse_json_response(self._ask(prompt))
        out: list[str] = []
        for k in reply if isinstance(reply, list) else []:
            c = lookup.get(normalize_text(str(k)))
            if c is not None and c not in out:
                out.append(c)
        return out

    def extract_all(self, records: Sequence[Any]) -> dict[str, list[str]]:
        if self.vocabulary is None:
            self.fit(records)
        return super().extract_all(records)
