"""Paper-style medical VQA scoring (AttTok section 5.1; the rule-based part of MedEvalKit / Lingshu's workflow).

* Answers are normalised (:func:`normalize_answer`): attribute tokens removed, lower case, number words -> digits
  ("two" -> "2"), punctuation -> spaces (decimal points kept), articles (a/an/the) removed, whitespace collapsed.
* **Closed** questions: yes/no references are judged by the *leading* yes/no of the prediction ("Yes, there is" is
  yes); other closed references (choices such as "CT") by exact match of the normalised texts.
* **Open** questions: exact match (``open_accuracy``), plus token recall and token F1 of the normalised tokens
  (``open_token_recall``, ``open_token_f1``), each reported on its own.
* Optional **LLM-as-judge** for open answers that do not match exactly (``judge=chat``, prompt ``judge.txt``):
  reported only as ``open_judge_accuracy`` = (exact or judged equivalent) / open; never mixed into exact match.

:func:`score_vqa` returns overall/closed/open numbers, breakdowns by question type and organ, and the worst-answered
question types. :func:`question_only_baseline` answers from the question type alone (a floor for the results doc).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from attok_monai.vqa.llm import ChatFn, load_prompt, render_prompt

__all__ = [
    "normalize_answer",
    "leading_yes_no",
    "token_scores",
    "score_vqa",
    "question_only_baseline",
    "format_scores_markdown",
    "NUMBER_WORDS",
]

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_ARTICLES = {"a", "an", "the"}
_TOKEN_RE = re.compile(r"<\|[a-z0-9_]+\|>")


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def normalize_answer(text: Any) -> str:
    """``"The Left  Lung."`` -> ``"left lung"``; ``"Two"`` -> ``"2"``; ``"5.6cm"`` -> ``"5.6cm"``;
    ``"<|attribute_begin|><|rad_ct|><|attribute_end|> CT"`` -> ``"ct"``."""
    s = _TOKEN_RE.sub(" ", str(text if text is not None else "")).lower()
    s = re.sub(r"[^\w\s.]", " ", s).replace("_", " ")
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)
    toks = [NUMBER_WORDS.get(t, t) for t in s.split()]
    return " ".join(t for t in toks if t not in _ARTICLES)


def leading_yes_no(text: Any) -> str | None:
    """``"yes"``/``"no"`` when the normalised prediction starts with it, else None."""
    toks = normalize_answer(text).split()
    return toks[0] if toks and toks[0] in ("yes", "no") else None


def token_scores(prediction: Any, reference: Any) -> tuple[float, float]:
    """(recall, F1) of normalised tokens (multiset overlap)."""
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not r:
        return (1.0, 1.0) if not p else (0.0, 0.0)
    overlap = sum((Counter(p) & Counter(r)).values())
    if overlap == 0:
        return 0.0, 0.0
    recall, precision = overlap / len(r), overlap / len(p)
    return recall, 2 * precision * recall / (precision + recall)


def _judge(chat: ChatFn, template: str, question: str, reference: str, prediction: str) -> bool:
    reply = chat(
        [
            {
                "role": "user",
                "content": render_prompt(template, question=question, reference=reference, prediction=prediction),
            }
        ]
    )
    return leading_yes_no(reply) == "yes"


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score_vqa(
    predictions: Mapping[str, Any] | Sequence[Any],
    references: Sequence[Any],
    judge: ChatFn | None = None,
    worst_k: int = 5,
    min_type_count: int = 1,
) -> dict[str, Any]:
    """Score predictions against VQA references.

    Args:
        predictions: ``{id: predicted text}`` or a sequence aligned with ``references``. Texts may carry an attribute
            block; it is removed before scoring.
        references: records or dicts with ``id, answer, answer_type ("closed"/"open"), question_type (list[str] or
            str), organ`` and ``question`` (for the judge).
        judge: optional chat function; asked only for open answers without an exact match.
        worst_k: how many question types to list in ``worst_question_types``.
        min_type_count: question types with fewer references are left out of ``worst_question_types``.

    Returns:
        ``{"n", "overall_accuracy", "closed_accuracy", "open_accuracy", "open_token_recall", "open_token_f1",
        "open_judge_accuracy" (None without judge), "n_closed", "n_open", "by_question_type": {type: {"n",
        "accuracy", "n_closed", "closed_accuracy", "n_open", "open_accuracy"}}, "by_organ": {...same...},
        "worst_question_types": [{"question_type", "n", "accuracy"}, ...] (lowest accuracy first),
        "per_sample": [{"id", "answer_type", "correct", "token_recall", "token_f1", "judged"}]}``. Accuracies are in
        [0, 1]; None where a part is empty. ``accuracy`` counts closed-correct and open exact matches.

    Raises:
        ValueError: when a reference has no prediction, or an unknown answer type.
    """
    if not isinstance(predictions, Mapping):
        if len(predictions) != len(references):
            raise ValueError(f"score_vqa: {len(predictions)} predictions for {len(references)} references.")
        predictions = {str(_get(r, "id")): p for r, p in zip(references, predictions)}
    missing = [str(_get(r, "id")) for r in references if str(_get(r, "id")) not in predictions]
    if missing:
        raise ValueError(f"score_vqa: {len(missing)} references have no prediction, e.g. {missing[:5]}.")
    template = load_prompt("judge") if judge is not None else ""
    per: list[dict[str, Any]] = []
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {
        "by_question_type": defaultdict(list),
        "by_organ": defaultdict(list),
    }
    for r in references:
        rid = str(_get(r, "id"))
        pred, ref = predictions[rid], _get(r, "answer")
        atype = str(_get(r, "answer_type", "")).strip().lower()
        row: dict[str, Any] = {"id": rid, "answer_type": atype}
        if atype == "closed":
            ref_yn = normalize_answer(ref)
            if ref_yn in ("yes", "no"):
                row["correct"] = leading_yes_no(pred) == ref_yn
            else:
                row["correct"] = normalize_answer(pred) == ref_yn
        elif atype == "open":
            row["correct"] = normalize_answer(pred) == normalize_answer(ref)
            row["token_recall"], row["token_f1"] = token_scores(pred, ref)
            if judge is not None:
                row["judged"] = (
                    True
                    if row["correct"]
                    else _judge(judge, template, str(_get(r, "question", "")), str(ref), str(pred))
                )
        else:
            raise ValueError(f"score_vqa: reference {rid} has answer_type {atype!r}; expected closed or open.")
        per.append(row)
        qtypes = _get(r, "question_type") or ["UNKNOWN"]
        for qt in [qtypes] if isinstance(qtypes, str) else qtypes:
            groups["by_question_type"][str(qt)].append(row)
        groups["by_organ"][str(_get(r, "organ") or "UNKNOWN")].append(row)

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        closed = [x for x in rows if x["answer_type"] == "closed"]
        opened = [x for x in rows if x["answer_type"] == "open"]
        return {
            "n": len(rows),
            "accuracy": _mean([float(x["correct"]) for x in rows]),
            "n_closed": len(closed),
            "closed_accuracy": _mean([float(x["correct"]) for x in closed]),
            "n_open": len(opened),
            "open_accuracy": _mean([float(x["correct"]) for x in opened]),
        }

    opened = [x for x in per if x["answer_type"] == "open"]
    overall = summary(per)
    out: dict[str, Any] = {
        "n": overall["n"],
        "overall_accuracy": overall["accuracy"],
        "n_closed": overall["n_closed"],
        "closed_accuracy": overall["closed_accuracy"],
        "n_open": overall["n_open"],
        "open_accuracy": overall["open_accuracy"],
        "open_token_recall": _mean([x["token_recall"] for x in opened]),
        "open_token_f1": _mean([x["token_f1"] for x in opened]),
        "open_judge_accuracy": _mean([float(x["judged"]) for x in opened]) if judge is not None else None,
    }
    for key, g in groups.items():
        out[key] = {k: summary(v) for k, v in sorted(g.items())}
    ranked = sorted(
        ((k, v) for k, v in out["by_question_type"].items() if v["n"] >= min_type_count),
        key=lambda kv: (kv[1]["accuracy"], -kv[1]["n"], kv[0]),
    )
    out["worst_question_types"] = [
        {"question_type": k, "n": v["n"], "accuracy": v["accuracy"]} for k, v in ranked[:worst_k]
    ]
    out["per_sample"] = per
    return out


def question_only_baseline(train_records: Sequence[Any], eval_records: Sequence[Any]) -> dict[str, str]:
    """Answer each eval question with the most frequent training answer for its (question types, closed/open) kind,
    falling back to the most frequent answer of its closed/open kind, then overall (ties: alphabetical).

    Returns:
        ``{eval id: answer text}`` (the most common original spelling of the winning normalised answer).
    """
    if not train_records:
        raise ValueError("question_only_baseline: no training records.")
    by_key: dict[Any, Counter] = defaultdict(Counter)
    spelling: dict[str, Counter] = defaultdict(Counter)
    for r in train_records:
        norm = normalize_answer(_get(r, "answer"))
        spelling[norm][str(_get(r, "answer")).strip()] += 1
        atype = str(_get(r, "answer_type", "")).strip().lower()
        qt = _get(r, "question_type") or []
        qt = (qt,) if isinstance(qt, str) else tuple(sorted(qt))
        for key in ((qt, atype), atype, None):
            by_key[key][norm] += 1

    def best(c: Counter) -> str:
        norm = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        return sorted(spelling[norm].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

    out = {}
    for r in eval_records:
        atype = str(_get(r, "answer_type", "")).strip().lower()
        qt = _get(r, "question_type") or []
        qt = (qt,) if isinstance(qt, str) else tuple(sorted(qt))
        for key in ((qt, atype), atype, None):
            if by_key.get(key):
                out[str(_get(r, "id"))] = best(by_key[key])
                break
    return out


def format_scores_markdown(scores: Mapping[str, Any], title: str = "VQA scores") -> str:
    """A markdown table of the headline numbers, the organ breakdown and the worst question types (percent)."""

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}"

    lines = [
        f"### {title}",
        "",
        "| n | overall | closed | open (exact) | open token recall | open token F1 | open (judge) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {scores['n']} | {pct(scores['overall_accuracy'])} | {pct(scores['closed_accuracy'])} | "
        f"{pct(scores['open_accuracy'])} | {pct(scores['open_token_recall'])} | {pct(scores['open_token_f1'])} | "
        f"{pct(scores['open_judge_accuracy'])} |",
        "",
        "| organ | n | accuracy | closed | open |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in scores["by_organ"].items():
        lines.append(
            f"| {k} | {v['n']} | {pct(v['accuracy'])} | {pct(v['closed_accuracy'])} | {pct(v['open_accuracy'])} |"
        )
    lines += ["", "| worst question types | n | accuracy |", "|---|---:|---:|"]
    lines += [f"| {w['question_type']} | {w['n']} | {pct(w['accuracy'])} |" for w in scores["worst_question_types"]]
    return "\n".join(lines) + "\n"
