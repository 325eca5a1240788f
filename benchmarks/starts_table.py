"""Issue 21's table: baseline, attribute tokens alone and AttTok (+All, +ACC, +ACM) from scratch and from the compact
generalist, on every set, written from the runs that ``bench_bundles.py`` recorded in ``benchmarks/.state``.

Each row names its result set (``<bundle>_<tag>.json``), the variant and the settings it ran with; the command that
trains a row's missing seeds is printed by ``--commands`` (resumable: recorded runs are skipped). A row without
recorded runs shows ``not run``. Nothing here trains.

    python benchmarks/starts_table.py                       # rewrite the section of docs/benchmarks.md
    python benchmarks/starts_table.py --commands G=/path/to/generalist/model
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

STATE = Path(__file__).resolve().parent / ".state"
SEEDS = (0, 1, 2)
SECTION = "issue21_table"
VARIANT_NAMES = {"baseline": "baseline", "tokens": "tokens alone", "acc": "+ACC", "acm": "+ACM", "all": "+All"}


@dataclass(frozen=True)
class Row:
    bundle: str
    start: str  # "scratch" | "generalist"
    variant: str  # bench_bundles variant
    tag: str  # result set: benchmarks/.state/<bundle>_<tag>.json
    settings: str = "today's defaults"
    overrides: str = ""  # the --override values beyond generalist_dir, as run

    @property
    def shown_settings(self) -> str:
        """``settings`` as the table shows it: ``-`` for a baseline at the defaults (no attribute tokens, no ACC: the
        AttTok keys do not reach it)."""
        return "-" if self.variant == "baseline" and self.settings == "today's defaults" else self.settings

    @property
    def from_generalist(self) -> bool:
        """Whether the row starts from a generalist (``generalist``, or an earlier one such as ``generalist A``)."""
        return self.start.startswith("generalist")

    @property
    def state(self) -> str:
        return f"{self.bundle}_{self.tag}"

    def argv(self, generalist: str) -> list[str]:
        """The ``bench_bundles.py`` arguments that train this row's seeds (from the repository root)."""
        argv = ["benchmarks/bench_bundles.py", "--bundles", self.bundle, "--variants", self.variant, "--seeds",
                *map(str, SEEDS), "--jobs", "2", "--threads", "1", "--final-val-only", "--tag", self.tag,
                "--doc", f"/tmp/{self.state}.md"]
        over = ([f"generalist_dir={generalist}"] if self.from_generalist else []) + self.overrides.split()
        if self.from_generalist:
            argv += ["--extra", "from_generalist"]
        return argv + (["--override", *over] if over else [])

    def command(self, generalist: str) -> str:
        return "python " + " ".join(self.argv(generalist))


CLASSIFICATION = ("fundus_dr", "derma_isic", "oct_retina", "xray_pneumonia", "pathology_lung")
ALL_SETS = CLASSIFICATION + ("vqa_rad",)  # the six sets of the table
STUDY_SETS = ("fundus_dr", "derma_isic")  # the study's two sets: +ACC and +ACM rows too
# The generalist the table's generalist rows start from, named by its result-set tag: every run records the generalist
# it started from (card run name, MD5 of model.pt) and bench_bundles refuses to mix two in one result set, so a table
# row is always one generalist's. GENERALIST_TAG: generalist E, the README's command with the default recipe
# (`class_balanced: true` since 2026-12-04; seed 0, 1 thread, AVX2 code paths; docs/benchmarks.md gives its MD5).
# D_TAG: generalist D, the recipe before (`class_balanced: false`), the issue table's generalist until 2026-12-04.
GENERALIST_TAG = "gen_cb2"
D_TAG = "gen_d"
# vqa_rad keeps its own full config and took the study's keys only from commit 96d949f on (before, its model used
# AttTokConfig's own fa_position "decision" and attribute_init "keyword"): D's attribute-token rows were rerun under
# these tags; the earlier runs are in LEVERS_D. A baseline has no attribute tokens, so the keys do not reach it.
# E's vqa_rad runs all came after 96d949f.
VQA_KEYS_TAGS = {"scratch": "keys", "generalist D": "gen_d_keys"}
_VQA_BEFORE = "fa_position: decision, attribute_init: keyword (vqa_rad before 96d949f)"


def generalist_rows(bundle: str, tag: str, start: str = "generalist") -> list[Row]:
    """The issue's generalist rows of one set from the generalist whose runs are under ``tag``: baseline, tokens
    alone and +All, and +ACC and +ACM on the study's sets."""
    attribute_tag = VQA_KEYS_TAGS.get(start, tag) if bundle == "vqa_rad" else tag
    rows = [Row(bundle, start, "baseline", tag)] + [Row(bundle, start, v, attribute_tag) for v in ("tokens", "all")]
    return rows + ([Row(bundle, start, v, tag) for v in ("acc", "acm")] if bundle in STUDY_SETS else [])


def pick(rows: list[Row], bundle: str, variant: str) -> list[Row]:
    """The rows of ``rows`` for one set and variant, in order."""
    return [r for r in rows if r.bundle == bundle and r.variant == variant]


ROWS: list[Row] = []
# Generalist A's rows (tags gen, gen_new): the first generalist, whose weights were not kept; incomplete for good.
EARLIER: list[Row] = []
# Generalist D's rows of the table (the table's generalist until 2026-12-04).
ROWS_D: list[Row] = []
for b in ALL_SETS:
    if b == "fundus_dr":  # fundus from scratch: the study's own runs at today's defaults
        ROWS += [Row(b, "scratch", "baseline", "merged"), Row(b, "scratch", "tokens", "new"),
                 Row(b, "scratch", "all", "distinct")]
    else:  # derma's scratch baseline is the study's (a baseline has no attribute tokens, no ACC: the study's
        # attribute_init/acc_norm settings do not reach it)
        ROWS += [Row(b, "scratch", "baseline", "study" if b == "derma_isic" else "defaults"),
                 Row(b, "scratch", "all", VQA_KEYS_TAGS["scratch"] if b == "vqa_rad" else "defaults")]
    ROWS += generalist_rows(b, GENERALIST_TAG)
    ROWS_D += generalist_rows(b, D_TAG, "generalist D")
    # generalist A: the baselines of fundus and derma ran under tag gen_new (the tag's acc_norm/attribute_init
    # overrides touch no part of a baseline model: no attribute tokens, no ACC)
    base_tag = "gen_new" if b in STUDY_SETS else "gen"
    EARLIER += [Row(b, "generalist A", "baseline", base_tag, "-" if base_tag == "gen" else "- (run as gen_new)",
                    "acc_norm=True attribute_init=distinct" if base_tag == "gen_new" else "")]
    settings = _VQA_BEFORE if b == "vqa_rad" else "today's defaults"
    EARLIER += [Row(b, "generalist A", "tokens", "gen", settings), Row(b, "generalist A", "all", "gen", settings)]
    if b in STUDY_SETS:
        EARLIER += [Row(b, "generalist A", "all", "gen_new", "acc_norm: true", "acc_norm=True attribute_init=distinct"),
                    Row(b, "generalist A", "acc", "gen"), Row(b, "generalist A", "acm", "gen")]
SCRATCH: list[Row] = [r for r in ROWS if not r.from_generalist]


# Levers on the generalist start (fundus_dr, then pathology_lung; derma_isic for generalists B and C): each against the
# gen_new rows (pathology_lung: gen; full fine-tuning at the bundle's lr 1e-3, acc_norm true for +All); a baseline has
# no ACC, so acc_norm does not reach it.
LEVERS: list[Row] = []
for b in ("fundus_dr", "pathology_lung", "derma_isic"):
    for tag, settings, over in (
        ("gen_new", "full fine-tuning, lr 1e-3", "acc_norm=True attribute_init=distinct") if b != "pathology_lung" else
        ("gen", "full fine-tuning, lr 1e-3 (+All: acc_norm false)", ""),
        ("gen_lora", "finetune: lora (the paper's recipe)", "finetune=lora acc_norm=True"),
        ("gen_eq", "generalist with source_weights: equal", "acc_norm=True"),
        ("gen_lr3e4", "full fine-tuning, lr 3e-4", "lr=0.0003 acc_norm=True"),
        ("gen_fv", "finetune: frozen_vision (+All: acc_norm false)", "finetune=frozen_vision"),
        ("gen_sp", "shrink_perturb [0.4, 0.1] (+All: acc_norm false)", "shrink_perturb=[0.4,0.1]"),
        ("gen_cb", "generalist pre-trained with class_balanced: true (+All: acc_norm false)", ""),
    ):
        for v in ("baseline", "all"):
            LEVERS.append(Row(b, "generalist", v, tag, settings, over))


# Levers and earlier settings on generalist D (tag gen_d): each against the table above (same start, same
# seeds); a baseline has no attribute tokens or ACC, so none of these reaches it.
LEVERS_D: list[Row] = [Row("vqa_rad", "scratch", "all", "defaults", _VQA_BEFORE),
                       Row("vqa_rad", "generalist D", "tokens", D_TAG, _VQA_BEFORE),
                       Row("vqa_rad", "generalist D", "all", D_TAG, _VQA_BEFORE)]
LEVERS_D += [Row(b, "generalist D", "all", "gen_d_an", "acc_norm: true", "acc_norm=True")
             for b in ALL_SETS]
# 2026-12-03 (round 10): ACC's residual scale at a tenth (the +ACM row is its limit gamma = 0), and the class-balanced
# sampler of the paper's tuning (Appendix A.2) on fundus_dr, whose bundle trains without it (derma_isic's with it).
LEVERS_D += [Row("fundus_dr", "generalist D", "all", "gam01", "gamma: 0.01", "gamma=0.01")]
LEVERS_D += [Row("fundus_dr", "generalist D", v, "bal", "balanced_sampler: true", "balanced_sampler=True")
             for v in ("baseline", "all")]


# Levers on generalist E (round 12, 2026-12-04): on fundus_dr each of AttTok's parts alone from E is 5-6 points above
# E's baseline and +All only 1.9: does less of ACC (gamma) or of ACM (lambda) give +All its parts' gain? Against the
# issue table's E rows (same start, same seeds). cb2_repro: +All's seed 0 (run in round 10 on an AMD EPYC family 25
# model 1) rerun on round 12's model 17 under the AVX2 pins, to check that E's rows from the two CPU kinds compare.
# Round 13 (2026-12-04, night): gamma 0.01 on the other four sets (the study's rule: both sets, then all six), and
# ACC's keys and values without gradient into the book (acc_book_grad: false) on the study's two sets; ACC's pre-norm
# (acc_norm: true), alone and with a residual ten times the paper's (gamma 1.0), on the same two.
LEVERS_E: list[Row] = []
for b in ALL_SETS:
    LEVERS_E += [r for r in ROWS if r.bundle == b and r.from_generalist]
    LEVERS_E.append(Row(b, "generalist", "all", "cb2_gam01", "gamma: 0.01", "gamma=0.01"))
    # lambda_start 0.1: the study's two sets in round 12, three more in round 16 (not xray_pneumonia, whose baseline
    # of 97.3 leaves no room for the issue's +2 bar)
    if b != "xray_pneumonia":
        LEVERS_E.append(Row(b, "generalist", "all", "cb2_lam01", "lambda_start: 0.1", "lambda_start=0.1"))
    if b in STUDY_SETS:
        LEVERS_E += [Row(b, "generalist", "all", "cb2_bg", "acc_book_grad: false", "acc_book_grad=False"),
                     Row(b, "generalist", "all", "cb2_an", "acc_norm: true", "acc_norm=True"),
                     Row(b, "generalist", "all", "cb2_an_g1", "acc_norm: true, gamma: 1.0", "acc_norm=True gamma=1.0")]
    if b == "fundus_dr":
        LEVERS_E.append(Row(b, "generalist", "all", "cb2_repro", "seed 0 rerun on another CPU kind (pinned)"))


# fundus_dr from D over five seeds (seeds 3 and 4 added on 2026-12-03): does the rows' order hold beyond 3 seeds?
# From E likewise (seeds 3 and 4 added on 2026-12-05, round 14): fundus_dr's 120 validation images move a run by up
# to 9 points between training paths (round 13), so its +/-2-point comparisons need more seeds. From F too (below).
FIVE_SEEDS = (0, 1, 2, 3, 4)
FUNDUS_FIVE: list[Row] = [Row("fundus_dr", "generalist D", v, D_TAG) for v in ("baseline", "tokens", "all")]
FUNDUS_FIVE += [Row("fundus_dr", "generalist E", v, GENERALIST_TAG) for v in ("baseline", "tokens", "all")]


# Generalist F (round 14, 2026-12-05): E's recipe with `--projector_norm true` (the projector ends with an RMS norm
# whose gain starts at the LM's initializer_range, so the visual tokens enter the LM at the text embeddings' scale;
# E's are ~60x its embedding rows). Does a book of text-scale tokens beside visual tokens of the same scale let ACC's
# attention differ between images, and AttTok help? Its baseline, tokens alone and +All on the study's two sets first,
# against E's rows and scratch's (same seeds).
F_TAG = "gen_pn"


def f_row(bundle: str, variant: str) -> Row:
    """One row from generalist F at today's AttTok defaults."""
    return Row(bundle, "generalist F", variant, F_TAG, "-" if variant == "baseline" else "projector_norm generalist")


def beside_f(bundle: str, variant: str) -> list[Row]:
    """Scratch's and E's rows of one set and variant, then F's."""
    return (pick(SCRATCH, bundle, variant)
            + [replace(r, start="generalist E") for r in pick(ROWS, bundle, variant) if r.from_generalist]
            + [f_row(bundle, variant)])


GENERALIST_F: list[Row] = []
for b in STUDY_SETS:
    for v in ("baseline", "tokens", "all"):
        GENERALIST_F += beside_f(b, v)
    # F's visual tokens, book and queries all at norm ~0.5-0.6 leave ACC's attention uniform over the 3K book tokens
    # (round 14's diagnosis); ACC's pre-norm brings its scores to the scale where they can differ between images
    GENERALIST_F.append(Row(b, "generalist F", "all", F_TAG + "_an", "projector_norm generalist, acc_norm true",
                            "acc_norm=True"))
# Round 15 (2026-12-05): ACC's temperature between the two measured ends (uniform at s = 1, one kind of book token per
# model with the pre-norm): a learned logit scale started at 100 (logits spread ~1 after training on F), with ACC's
# biases (the default) and without them (the paper's eqs. 6-7: matrices only)
LOGIT_SCALE = (("_ls100", "ACC logit scale 100, learned", "acc_logit_scale=100 acc_logit_scale_learned=True"),
               ("_nb100", "ACC without biases, logit scale 100, learned",
                "acc_bias=False acc_logit_scale=100 acc_logit_scale_learned=True"))


def logit_scale_rows(bundle: str) -> list[Row]:
    """F's +All rows of one set with each of round 15's ACC settings."""
    return [Row(bundle, "generalist F", "all", F_TAG + t, "projector_norm generalist, " + label, over)
            for t, label, over in LOGIT_SCALE]


for b in STUDY_SETS:
    GENERALIST_F += logit_scale_rows(b)
# VQA-RAD, the one set where E's +All reaches the issue's +2 bar: does F keep it? (baseline and +All)
for v in ("baseline", "all"):
    GENERALIST_F += beside_f("vqa_rad", v)
GENERALIST_F += logit_scale_rows("vqa_rad")
# Round 15: F's baseline and +All on the three other sets (E's +All: oct_retina +1.2 on every seed, the others level)
for b in ("oct_retina", "pathology_lung", "xray_pneumonia"):
    for v in ("baseline", "all"):
        GENERALIST_F += beside_f(b, v)
FUNDUS_FIVE += [f_row("fundus_dr", v) for v in ("baseline", "tokens", "all")]
FUNDUS_FIVE += logit_scale_rows("fundus_dr")


# Round 16 (2026-12-06): derma_isic without the class-balanced sampler (its bundle trains with it, the paper's tuning;
# its validation part is 67% naevi, so every balanced row sits below the majority rate), from scratch and from E,
# beside the balanced rows of the table; and fundus_dr's scratch baseline rerun at today's code (the table's
# scratch row, `merged`, ran at the study's merge, before later changes to the code path).
NO_BALANCE = ("balanced_sampler: false", "balanced_sampler=False")
ROUND16: list[Row] = [r for r in ROWS if r.bundle == "fundus_dr" and r.variant == "baseline" and not r.from_generalist]
ROUND16.append(Row("fundus_dr", "scratch", "baseline", "r16", "- (rerun at today's code)"))
for v in ("baseline", "tokens", "all"):
    for start, tag in (("scratch", "nobal"), ("generalist", "cb2_nobal")):
        if start == "scratch" and v == "tokens":
            continue
        ROUND16 += [r for r in pick(ROWS, "derma_isic", v) if r.start == start]
        ROUND16.append(Row("derma_isic", start, v, tag, *NO_BALANCE))
# ... and the attribute rows started from the keyword's first token (the answer's first word), from E, on the study's
# two sets, beside E's baseline and its rows with `distinct` (the default)
for b in STUDY_SETS:
    for v in ("baseline", "tokens", "all"):
        ROUND16 += [r for r in pick(ROWS, b, v) if r.from_generalist]
        if v != "baseline":
            ROUND16.append(Row(b, "generalist", v, "cb2_ft", "attribute_init: first_token",
                               "attribute_init=first_token"))


# Round 17 (2026-12-06): the attribute tokens alone in front of the text, without <|attribute_begin|> /
# <|attribute_end|> (attribute_markers: false, the paper's wording), so that the class decision is read where the
# plain-text model reads its first answer word; with the rows started from that word (attribute_init: first_token, the
# start that decides as the plain text does before fine-tuning; benchmarks/init_decision.py), from E, on all six sets,
# beside E's baseline and its rows at today's defaults.
NO_MARKERS = ("attribute_markers: false, attribute_init: first_token",
              "attribute_markers=False attribute_init=first_token")
ROUND17: list[Row] = []
for b in ALL_SETS:
    for v in ("baseline", "tokens", "all"):
        ROUND17 += [r for r in pick(ROWS, b, v) if r.from_generalist]
        if v != "baseline":
            ROUND17.append(Row(b, "generalist", v, "cb2_nmft", *NO_MARKERS))
# ... and +All from scratch on the study's two sets (the study's rule: a default is chosen from both starts), beside the
# table's scratch rows (fundus_dr's baseline also at today's code, round 16's `r16`)
for b in STUDY_SETS:
    ROUND17 += [r for r in ROWS if r.bundle == b and not r.from_generalist and r.variant in ("baseline", "all")]
    if b == "fundus_dr":
        ROUND17.append(Row(b, "scratch", "baseline", "r16", "- (rerun at today's code)"))
    ROUND17.append(Row(b, "scratch", "all", "nmft", *NO_MARKERS))
# ... and with ACC's keys and values detached from the book (acc_book_grad: false, round 13's other setting ahead of +All
# on every derma_isic seed) on top, from E, on the study's two sets
for b in STUDY_SETS:
    ROUND17.append(Row(b, "generalist", "all", "cb2_nmbg", NO_MARKERS[0] + ", acc_book_grad: false",
                       NO_MARKERS[1] + " acc_book_grad=False"))
# fundus_dr's +All without markers over E's five seeds (its 120 validation images)
FUNDUS_FIVE.append(Row("fundus_dr", "generalist E", "all", "cb2_nmft", *NO_MARKERS))



# Round 18 (2026-12-06): the baseline's start. (1) Every scratch baseline of the table rerun at today's code
# (tag r18; fundus_dr's in round 16, r16): the table's scratch baselines ran at the study's merge or before, and the
# second target compares E's baselines with them. (2) From E with the vision encoder at a tenth of the bundle's lr
# (vision_lr_scale: 0.1; round 4's untried lever: on fundus_dr E's frozen features probe above anything fine-tuning
# keeps), beside E's baseline at the defaults; and, where a tenth lost most (pathology_lung, oct_retina: the warm-start
# gap, round 9), at three times the bundle's lr.
VISION_LR = ("vision_lr_scale: 0.1", "vision_lr_scale=0.1")
VISION_LR3 = ("vision_lr_scale: 3.0", "vision_lr_scale=3.0")
ROUND18: list[Row] = []
for b in ALL_SETS:
    ROUND18 += pick(ROWS, b, "baseline")
    ROUND18.append(Row(b, "scratch", "baseline", "r16" if b == "fundus_dr" else "r18", "- (rerun at today's code)"))
    if b in ("fundus_dr", "derma_isic", "oct_retina", "pathology_lung"):
        ROUND18.append(Row(b, "generalist", "baseline", "cb2_vl01", *VISION_LR))
    if b in ("oct_retina", "pathology_lung"):
        ROUND18.append(Row(b, "generalist", "baseline", "cb2_vl3", *VISION_LR3))
# ... on oct_retina, where three times the lr lifts E's baseline by as much as the attribute tokens do (+1.9), the
# attribute-token rows with it too: is AttTok's gain there the vision encoder's lr?
for v in ("tokens", "all"):
    ROUND18 += [r for r in pick(ROWS, "oct_retina", v) if r.from_generalist]
    ROUND18.append(Row("oct_retina", "generalist", v, "cb2_vl3", *VISION_LR3))
# ... and on fundus_dr, whose tokens-alone row leads E's baseline by the most (+5.6), the same check
ROUND18 += [r for r in pick(ROWS, "fundus_dr", "baseline") if r.from_generalist]
ROUND18.append(Row("fundus_dr", "generalist", "baseline", "cb2_vl3", *VISION_LR3))
ROUND18 += [r for r in pick(ROWS, "fundus_dr", "tokens") if r.from_generalist]
ROUND18.append(Row("fundus_dr", "generalist", "tokens", "cb2_vl3", *VISION_LR3))
# ... and the two sets nearest the first bar with the markers off (round 17: derma_isic +1.6 / -0.2, pathology_lung
# +0.7 / +1.1 over E's baseline on 3 seeds) over five seeds (seeds 3-4 of both rows run at today's code)
FIVE_18: list[Row] = []
for b in ("derma_isic", "pathology_lung"):
    FIVE_18 += [r for r in pick(ROWS, b, "baseline") if r.from_generalist]
    FIVE_18 += [r for r in pick(ROUND17, b, "all") if r.tag == "cb2_nmft"]

# Round 19 (2026-12-06): the same encoder-lr check of E's baseline on the sets round 18 left out (derma_isic at 3.0,
# xray_pneumonia and vqa_rad at 0.1 and 3.0), beside the attribute-token rows at the defaults: does AttTok's lead over
# E's baseline survive a baseline at its best encoder lr of {0.1, 1.0, 3.0}?
ROUND19: list[Row] = []
for b in ("derma_isic", "xray_pneumonia", "vqa_rad"):
    ROUND19 += [r for r in pick(ROWS, b, "baseline") if r.from_generalist]
    if b != "derma_isic":  # derma_isic's 0.1 row is round 18's
        ROUND19.append(Row(b, "generalist", "baseline", "cb2_vl01", *VISION_LR))
    else:
        ROUND19 += [r for r in ROUND18 if r.bundle == b and r.tag == "cb2_vl01"]
    ROUND19.append(Row(b, "generalist", "baseline", "cb2_vl3", *VISION_LR3))
    for v in ("tokens", "all"):
        ROUND19 += [r for r in pick(ROWS, b, v) if r.from_generalist]
# ... and fundus_dr, where a tenth of the encoder's lr gains accuracy and loses the rare grades (round 18), with the
# paper's class-balanced sampler (Appendix A.2), at the default lr and at 0.1, the baseline and the tokens alone
BALANCED = ("balanced_sampler: true", "balanced_sampler=True")
BALANCED_VL01 = ("balanced_sampler: true, vision_lr_scale: 0.1", "vision_lr_scale=0.1 balanced_sampler=True")
ROUND19_FUNDUS: list[Row] = [r for r in pick(ROWS, "fundus_dr", "baseline") if r.from_generalist]
ROUND19_FUNDUS += [r for r in ROUND18 if r.bundle == "fundus_dr" and r.tag == "cb2_vl01"]
ROUND19_FUNDUS += [Row("fundus_dr", "generalist", "baseline", "cb2_bal", *BALANCED),
                   Row("fundus_dr", "generalist", "baseline", "cb2_bal_vl01", *BALANCED_VL01)]
ROUND19_FUNDUS += [r for r in pick(ROWS, "fundus_dr", "tokens") if r.from_generalist]
ROUND19_FUNDUS.append(Row("fundus_dr", "generalist", "tokens", "cb2_bal_vl01", *BALANCED_VL01))
# ... and a perturbed warm start (shrink and perturb, Ash & Adams 2020): is the tokens' lead there the cold
# attribute-marker rows shaking E's fitted weights loose (round 19's diagnosis), which a perturbed start gives the
# plain baseline too?
SHRINK_PERTURB = ("shrink_perturb: [0.4, 0.1]", "shrink_perturb=[0.4,0.1]")
ROUND19_FUNDUS += [Row("fundus_dr", "generalist", v, "cb2_sp", *SHRINK_PERTURB) for v in ("baseline", "tokens")]
# ... and fundus_dr's tokens alone with the markers on or off and the attribute row cold (distinct) or warm
# (first_token): the diagnosis finds the early, consistent push to the encoder with the markers only
ROUND19_MARKERS: list[Row] = [r for v in ("baseline", "tokens") for r in pick(ROWS, "fundus_dr", v) if r.from_generalist]
ROUND19_MARKERS += [r for r in ROUND16 if r.bundle == "fundus_dr" and r.variant == "tokens" and r.tag == "cb2_ft"]
ROUND19_MARKERS.append(Row("fundus_dr", "generalist", "tokens", "cb2_nmd", "attribute_markers: false",
                           "attribute_markers=False"))
ROUND19_MARKERS += [r for r in ROUND17 if r.bundle == "fundus_dr" and r.variant == "tokens" and r.tag == "cb2_nmft"]
# ... and the plain baseline with the markers alone (plain_markers: the plain answer after an empty marker block, no
# attribute token): is fundus_dr's lead the markers' or the attribute tokens'?
ROUND19_MARKERS.append(Row("fundus_dr", "generalist", "baseline", "cb2_pm", "plain_markers: true", "plain_markers=True"))
# ... over E's five seeds (seeds 3-4 of the markers-only baseline run this round; the other two rows hold five)
FIVE_19_FUNDUS: list[Row] = [r for v in ("baseline", "tokens") for r in pick(ROWS, "fundus_dr", v) if r.from_generalist]
FIVE_19_FUNDUS.append(ROUND19_MARKERS[-1])
# ... and vqa_rad, the one set where +All meets the first bar (+5.4 open on seeds 0-2), over five seeds
FIVE_19: list[Row] = [r for v in ("baseline", "all") for r in pick(ROWS, "vqa_rad", v) if r.from_generalist]

# Round 20 (2026-12-06): the markers alone (plain_markers) as the baseline on the other sets, beside E's plain
# baseline, the tokens alone and +All at the defaults: how much of each set's AttTok lead is the two marker tokens?
PLAIN_MARKERS = ("plain_markers: true", "plain_markers=True")
ROUND20: list[Row] = []
for b in ("derma_isic", "oct_retina", "xray_pneumonia", "pathology_lung"):
    ROUND20 += [r for r in pick(ROWS, b, "baseline") if r.from_generalist]
    ROUND20.append(Row(b, "generalist", "baseline", "cb2_pm", *PLAIN_MARKERS))
    if b == "oct_retina":  # where the plain baseline at 3x the encoder's lr matched the tokens' lead (round 18)
        ROUND20 += [r for r in ROUND18 if r.bundle == b and r.variant == "baseline" and r.tag == "cb2_vl3"]
        ROUND20.append(Row(b, "generalist", "baseline", "cb2_pm_vl3", "plain_markers: true, vision_lr_scale: 3.0",
                           "plain_markers=True vision_lr_scale=3.0"))
    for v in ("tokens", "all"):
        ROUND20 += [r for r in pick(ROWS, b, v) if r.from_generalist]
# ... and over five seeds: vqa_rad (+All, open questions) and fundus_dr (tokens alone), the leads that survived round
# 19, and oct_retina and derma_isic, where the tokens alone lead the markers-only baseline on seeds 0-2 (seeds 3-4 of
# the markers-only rows, of oct_retina's baseline, and of both sets' tokens alone and +All run this round)
FIVE_20: list[Row] = []
for b, variants in (("vqa_rad", ("all",)), ("fundus_dr", ("tokens", "all")), ("oct_retina", ("tokens", "all")),
                    ("derma_isic", ("tokens", "all"))):
    FIVE_20 += [r for r in pick(ROWS, b, "baseline") if r.from_generalist]
    FIVE_20.append(Row(b, "generalist", "baseline", "cb2_pm", *PLAIN_MARKERS))
    FIVE_20 += [r for v in variants for r in pick(ROWS, b, v) if r.from_generalist]

# Leave-one-out generalists (tag gen_lo, 2026-12-03): for each set, a generalist pre-trained with the README's command
# plus `--leave_out_sources '["<set>"]'` (that set's images never seen in pre-training), against the scratch and
# generalist-D rows of the table (same seeds). Does the generalist start lose to scratch because it was
# pre-trained on the very images it is then fine-tuned on (a warm start)?
LEAVE_OUT_SETS = ("pathology_lung", "fundus_dr")
LEAVE_OUT: list[Row] = []
for b in LEAVE_OUT_SETS:
    for v in ("baseline", "all"):
        LEAVE_OUT += pick(SCRATCH + ROWS_D, b, v)
        LEAVE_OUT.append(Row(b, "generalist without it", v, "gen_lo", f"leave_out_sources: [{b}]"))


# Class-balanced pre-training (`--class_balanced true`: each source's share of the draws split evenly over its classes).
# Generalist C (round 5, another machine, weights lost: tag gen_cb) and generalist E (the same command rebuilt on
# 2026-12-03 on this project's AMD EPYC, family 25 model 1: tag gen_cb2), against scratch and generalist D.
# Round 11 (2026-12-04) adds E's rows on the other four sets (the table from E, baseline and +All first).
CB_ALL_SETS = ("derma_isic", "fundus_dr", "oct_retina", "xray_pneumonia", "pathology_lung", "vqa_rad")
# Generalist C's runs (round 5; its weights were lost, so these are all it will ever have):
C_RUNS = (("derma_isic", "baseline"), ("derma_isic", "all"), ("fundus_dr", "baseline"), ("fundus_dr", "all"),
          ("pathology_lung", "baseline"))
CLASS_BALANCED: list[Row] = []
for b in CB_ALL_SETS:
    for v in ("baseline", "tokens", "acc", "acm", "all"):  # +ACC and +ACM rows exist on the study's sets only
        CLASS_BALANCED += pick(SCRATCH + ROWS_D, b, v)
        if (b, v) in C_RUNS:
            CLASS_BALANCED.append(Row(b, "generalist C", v, "gen_cb", "class_balanced generalist (round 5)"))
        CLASS_BALANCED += [replace(r, start="generalist E") for r in pick(ROWS, b, v) if r.from_generalist]


# Where macro-F1 goes: per-class F1 of the open answers, per start and variant, on the two sets the study chose
# defaults on (the seeds each row recorded; the same result sets as the tables above).
PER_CLASS: dict[str, list[Row]] = {b: [] for b in sorted(STUDY_SETS)}
for b in PER_CLASS:
    for v in ("baseline", "all"):
        PER_CLASS[b] += pick(CLASS_BALANCED, b, v)
        PER_CLASS[b] += [r for r in pick(LEAVE_OUT, b, v) if r.tag == "gen_lo"]
        PER_CLASS[b] += [r for r in pick(LEVERS_D, b, v) if r.tag == "bal"]


def runs(row: Row, seeds: tuple[int, ...] = SEEDS) -> list[tuple[int, dict]]:
    path = STATE / f"{row.state}.json"
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    return [(s, d[f"{row.variant}/{s}"]) for s in seeds if f"{row.variant}/{s}" in d]


def cell(rs: list[tuple[int, dict]], key: str, variant: str | None = None) -> str:
    from bench_bundles import applies, fmt

    if variant is not None and not applies(variant, key):
        return "n/a"
    vals = [r[key] for _, r in rs if isinstance(r.get(key), (int, float))]
    return fmt(vals) if vals else "-"


def table(rows: list[Row] | None = None, skip_empty: bool | None = None, seeds: tuple[int, ...] = SEEDS) -> str:
    """The markdown table of ``rows`` (default: issue 21's); rows without runs say ``not run``, or are left out
    with ``skip_empty`` (default: for the levers, where a lever not run on a set has no row)."""
    rows = ROWS if rows is None else rows
    skip_empty = rows is LEVERS if skip_empty is None else skip_empty
    head = ("| set | start | variant | settings | open acc | closed acc | macro-F1 | bal. acc | retrieval | seeds | "
            "result set |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        rs = runs(r, seeds)
        if skip_empty and not rs:
            continue
        shown = ",".join(str(s) for s, _ in rs) or "not run"
        lines.append(
            f"| {r.bundle} | {r.start} | {VARIANT_NAMES[r.variant]} | {r.shown_settings} | {cell(rs, 'open_accuracy')} | "
            f"{cell(rs, 'closed_accuracy')} | {cell(rs, 'open_macro_f1')} | {cell(rs, 'open_balanced_accuracy')} | "
            f"{cell(rs, 'retrieval_accuracy', r.variant)} | {shown} | `{r.state}` |"
        )
    return "\n".join(lines)


def class_table(rows: list[Row], seeds: tuple[int, ...] = SEEDS) -> str:
    """Per-class F1 (%, mean ± std over the recorded seeds) of the open answers of each row with runs; one column per
    class, in the order the runs recorded them. Rows of different sets cannot share a table (their classes differ)."""
    from bench_bundles import fmt

    recorded = [(r, runs(r, seeds)) for r in rows]
    recorded = [(r, rs) for r, rs in recorded if rs]
    if not recorded:
        return "(no recorded runs)"
    if len({r.bundle for r, _ in recorded}) > 1:
        raise ValueError(f"class_table: rows of one set expected, got {sorted({r.bundle for r, _ in recorded})}")
    classes = list(recorded[0][1][0][1]["per_class_f1"])
    lines = ["| start | variant | settings | " + " | ".join(classes) + " | macro-F1 | seeds |",
             "|---|---|---|" + "---|" * (len(classes) + 2)]
    for r, rs in recorded:
        f1 = [fmt([run["per_class_f1"][c] for _, run in rs if c in run.get("per_class_f1", {})]) for c in classes]
        lines.append(f"| {r.start} | {VARIANT_NAMES[r.variant]} | {r.shown_settings} | " + " | ".join(f1)
                     + f" | {cell(rs, 'open_macro_f1')} | {','.join(str(s) for s, _ in rs)} |")
    return "\n".join(lines)


def sections() -> dict[str, str]:
    """Every section of docs/benchmarks.md this script writes, by name, in the order ``--print`` shows them."""
    out = {SECTION: table(), SECTION + "_a": table(EARLIER), SECTION + "_levers": table(LEVERS),
           SECTION + "_levers_d": table(LEVERS_D, skip_empty=True), SECTION + "_levers_e": table(LEVERS_E),
           SECTION + "_five": table(FUNDUS_FIVE, seeds=FIVE_SEEDS), SECTION + "_generalist_f": table(GENERALIST_F),
           SECTION + "_leave_out": table(LEAVE_OUT), SECTION + "_round16": table(ROUND16),
           SECTION + "_round17": table(ROUND17), SECTION + "_round18": table(ROUND18),
           SECTION + "_round18_five": table(FIVE_18, seeds=FIVE_SEEDS), SECTION + "_round19": table(ROUND19),
           SECTION + "_round19_fundus": table(ROUND19_FUNDUS), SECTION + "_round19_five": table(FIVE_19, seeds=FIVE_SEEDS),
           SECTION + "_round19_markers": table(ROUND19_MARKERS),
           SECTION + "_round19_five_fundus": table(FIVE_19_FUNDUS, seeds=FIVE_SEEDS),
           SECTION + "_round20": table(ROUND20), SECTION + "_round20_five": table(FIVE_20, seeds=FIVE_SEEDS),
           SECTION + "_class_balanced": table(CLASS_BALANCED)}
    return out | {f"{SECTION}_classes_{b}": class_table(rows) for b, rows in PER_CLASS.items()}


def foreign_start(row: Row, generalist: str) -> str | None:
    """Why ``row``'s recorded runs cannot be continued from ``generalist`` (they started from another generalist,
    or from one that was not recorded), or None."""
    from bench_bundles import other_starts, start_of

    path = STATE / f"{row.state}.json"
    if not row.from_generalist or not path.is_file():
        return None
    starts = other_starts(json.loads(path.read_text()), start_of([f"generalist_dir={generalist}"]))
    if not starts:
        return None
    return ("its runs started from a generalist that was not recorded" if starts == {"null"}
            else f"its runs started from {', '.join(sorted(starts))}")


def missing(rows: list[Row] | None = None) -> list[Row]:
    """The rows (default: issue 21's) with fewer recorded seeds than ``SEEDS``."""
    return [r for r in (ROWS if rows is None else rows) if len(runs(r)) < len(SEEDS)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", metavar="G=FOLDER", help="print the command of every row with missing seeds, "
                    "G= the generalist's model folder")
    ap.add_argument("--print", action="store_true", help="print the table instead of writing the doc")
    args = ap.parse_args()
    if args.commands:
        generalist = args.commands.split("=", 1)[-1]
        for r in missing():
            other = foreign_start(r, generalist)
            if other:
                print(f"# {r.state} {r.variant}: {other}; bench_bundles.py refuses to add runs from {generalist} to it. "
                      f"Rerun the row's seeds under a new tag (NEW: a name of yours): {replace(r, tag=r.tag + '_NEW').command(generalist)}")
            else:
                print(r.command(generalist))
        return
    if args.print:
        print("\n\n".join(sections().values()))
        return
    written = sections()
    for name, markdown in written.items():
        write_section(name, markdown)
    print(f"wrote sections {', '.join(written)} of docs/benchmarks.md")


if __name__ == "__main__":
    main()
