"""Cost of the ACC adapter and the ACM loss at Qwen2.5-VL-7B width (issues 2 and 9).

FLOPs are counted with ``FlopCounterMode`` on the ``meta`` device (no memory), for ACC forward + backward in each
evaluation order, ACM forward + backward, ACC inference with a cached book, and compared with one Qwen2.5-VL-7B
forward and one LoRA training step counted the same way (``attok_monai.flops``). CPU wall time and peak memory of
ACC + ACM forward + backward in fp32 are measured in one subprocess per configuration (its max RSS), time-boxed.
``--gpu`` adds bf16 CUDA timings of ACC and of a whole random-weight Qwen2.5-VL-7B LoRA step with and without ACC.

    python benchmarks/bench_acc.py            # full run, writes the "acc_cost" section of docs/benchmarks.md
    python benchmarks/bench_acc.py --quick --doc /tmp/b.md   # seconds-long smoke configuration
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attok_monai.flops import (  # noqa: E402
    LORA_TARGETS,
    count_flops,
    qwen25vl_7b_config,
    qwen25vl_forward_flops,
    qwen25vl_sample,
    qwen25vl_tiny_config,
    qwen25vl_train_step_flops,
    visual_token_count,
)
from attok_monai.losses.acm import ACMLoss  # noqa: E402
from attok_monai.networks.blocks import ACCAdapter, ACMProjection, EmbeddingBook  # noqa: E402
from benchmarks._report import DOC, hardware, write_section  # noqa: E402

SECTION = "acc_cost"
ISSUE2_K = (5, 100, 1000, 10000)
ISSUE9_K = (100, 1000, 10000, 50000)
# (label, mode, heads)
ACC_VARIANTS = (
    ("projected, 28 heads", "projected", 28),
    ("projected, 1 head", "projected", 1),
    ("reassociated, 1 head", "reassociated", 1),
    ("auto, 1 head", "auto", 1),
)
# low-rank ACC option (``inner_dim=r``, projected order, 1 head): not the paper's ACC, counted to show its cost
LOW_RANK = (512, 128)
REPORTED_H100_STEP_S = {224: 0.27, 448: 0.53}  # issue 9, batch 8: reported there, not measured here


# ---------------------------------------------------------------------------------------------------- FLOPs
def _acc_inputs(batch: int, n_visual: int, k: int, dim: int, device: str, requires_grad: bool):
    f = torch.randn(batch, n_visual, dim, device=device, requires_grad=requires_grad)
    book = torch.randn(k, 3, dim, device=device, requires_grad=requires_grad)
    return f, book


def acc_flops(mode: str, heads: int, batch: int, n_visual: int, k: int, dim: int, backward: bool = True,
              inner_dim: int | None = None) -> int:
    """ACC forward (+ backward into its weights and the book) FLOPs, counted on meta. The visual tokens come from
    the frozen vision tower (no LoRA there in the training setting), so they need no gradient."""
    with torch.device("meta"):
        acc = ACCAdapter(dim, num_heads=heads, mode=mode, inner_dim=inner_dim)
    f, book = _acc_inputs(batch, n_visual, k, dim, "meta", True)
    f.requires_grad_(False)

    def run():
        out = acc(f, book)
        if backward:
            out.sum().backward()

    return count_flops(run)


def acc_cached_inference_flops(heads: int, batch: int, n_visual: int, k: int, dim: int) -> int:
    """ACC forward with a frozen book whose projections are already cached (second call counted)."""
    with torch.device("meta"):
        acc = ACCAdapter(dim, num_heads=heads, mode="auto").requires_grad_(False)
    f, book = _acc_inputs(batch, n_visual, k, dim, "meta", False)
    with torch.no_grad():
        acc(f, book, book_version=("bench", 0))  # fills the cache
        return count_flops(lambda: acc(f, book, book_version=("bench", 0)))


class ThetaACM(torch.nn.Module):
    """ACM as training runs it: the model's theta (:class:`ACMProjection`) on f^a (N, d) and on the book (K, 3, d),
    then the parameter-free :class:`ACMLoss`; ``forward(f_a, target, book) -> scalar``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = ACMProjection(dim)
        self.loss = ACMLoss()

    def forward(self, f_a: torch.Tensor, target: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        return self.loss(self.theta(f_a), target, self.theta(book))


def acm_flops(n_predictions: int, k: int, dim: int, backward: bool = True) -> int:
    """ACM forward (+ backward into predictions, book and theta) FLOPs, counted on meta."""
    with torch.device("meta"):
        acm = ThetaACM(dim)
    f_a = torch.randn(n_predictions, dim, device="meta", requires_grad=True)
    book = torch.randn(k, 3, dim, device="meta", requires_grad=True)
    target = torch.zeros(n_predictions, dtype=torch.long)  # CPU: ACMLoss validates it with .any()

    def run():
        loss = acm(f_a, target, book)
        if backward:
            loss.backward()

    return count_flops(run)


# ---------------------------------------------------------------------------------------------------- CPU timing
def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def time_acc_acm(spec: dict) -> dict:
    """Wall time of ACC fwd+bwd and ACM fwd+bwd (fp32, CPU) for one configuration; run inside a fresh process so
    that ``ru_maxrss`` is this configuration's peak. ``spec``: mode, heads, batch, n_visual, k, dim, repeats,
    time_box_s."""
    torch.manual_seed(0)
    b, n, k, d = spec["batch"], spec["n_visual"], spec["k"], spec["dim"]
    acc = ACCAdapter(d, num_heads=spec["heads"], mode=spec["mode"])
    acm = ThetaACM(d)
    f, book = _acc_inputs(b, n, k, d, "cpu", True)
    f_a = torch.randn(b, d, requires_grad=True)
    target = torch.randint(0, k, (b,))
    params = [f, book, f_a, *acc.parameters(), *acm.parameters()]
    rss_setup = _maxrss_mib()

    def once() -> tuple[float, float]:
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        acc(f, book).square().mean().backward()
        t1 = time.perf_counter()
        acm(f_a, target, book).backward()
        return t1 - t0, time.perf_counter() - t1

    warm = once()
    runs = []
    if sum(warm) <= spec["time_box_s"]:
        runs = [once() for _ in range(spec["repeats"])]
    used = runs or [warm]
    acc_t, acm_t = [r[0] for r in used], [r[1] for r in used]
    tot = [a + m for a, m in used]

    def sd(x):
        return statistics.stdev(x) if len(x) > 1 else float("nan")

    return {
        "acc_mean_s": statistics.mean(acc_t), "acc_std_s": sd(acc_t),
        "acm_mean_s": statistics.mean(acm_t), "acm_std_s": sd(acm_t),
        "total_mean_s": statistics.mean(tot), "total_std_s": sd(tot), "n": len(used), "over_box": not runs,
        "rss_peak_mib": _maxrss_mib(), "rss_delta_mib": _maxrss_mib() - rss_setup,
        "threads": torch.get_num_threads(),
    }


def run_timing_subprocess(spec: dict, timeout_s: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"killed after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_gflops() -> float:
    """Sustained fp32 matmul GFLOP/s of this process (used only to predict which configurations fit the box)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


# ---------------------------------------------------------------------------------------------------- GPU paths
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_acc_device(mode: str, heads: int, batch: int, n_visual: int, k: int, dim: int, device: str = "cuda",
                    dtype: torch.dtype = torch.bfloat16, repeats: int = 10) -> dict:
    """Mean/std seconds and peak memory of ACC fwd+bwd on ``device`` in ``dtype``."""
    dev = torch.device(device)
    acc = ACCAdapter(dim, num_heads=heads, mode=mode).to(dev, dtype)
    f = torch.randn(batch, n_visual, dim, device=dev, dtype=dtype, requires_grad=True)
    book = torch.randn(k, 3, dim, device=dev, dtype=dtype, requires_grad=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(repeats + 2):
        _sync(dev)
        t0 = time.perf_counter()
        acc(f, book).float().square().mean().backward()
        _sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return {"mean_s": statistics.mean(times), "std_s": statistics.stdev(times) if len(times) > 1 else float("nan"),
            "peak_mib": peak}


def build_lora_model(config, device: str | torch.device, dtype: torch.dtype, lora_rank: int = 16):
    """Random-weight ``Qwen2_5_VLForConditionalGeneration`` from ``config`` on ``device`` with peft LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=list(LORA_TARGETS)))


def lora_step_time(config, image_px: int, batch: int, prompt_tokens: int = 32, device: str = "cuda",
                   dtype: torch.dtype = torch.bfloat16, acc_k: int | None = None, steps: int = 5,
                   warmup: int = 2) -> dict:
    """Seconds per LoRA training step (forward, backward, AdamW) of a random-weight Qwen2.5-VL built from
    ``config``; with ``acc_k`` an ACC adapter (1 head, auto) over a K-attribute book is applied to the merged visual
    tokens (a forward hook on the vision merger) and the ACM loss is added on the last position's hidden state."""
    dev = torch.device(device)
    model = build_lora_model(config, dev, dtype)
    inner = model.get_base_model().model
    extra: list[torch.nn.Module] = []
    captured: dict[str, torch.Tensor] = {}
    if acc_k is not None:
        d = config.text_config.hidden_size
        book = EmbeddingBook(acc_k, d).to(dev, dtype)
        acc = ACCAdapter(d, num_heads=1, mode="auto").to(dev, dtype)
        acm = ThetaACM(d).to(dev, dtype)
        extra = [book, acc, acm]

        def acc_hook(_m, _inp, out):  # merger output: (total visual tokens, d); ACC treats tokens independently
            return acc(out.unsqueeze(0), book.tokens(), key_padding_mask=book.key_padding_mask()).squeeze(0)

        def norm_hook(_m, _inp, out):
            captured["h"] = out

        inner.visual.merger.register_forward_hook(acc_hook)
        inner.language_model.norm.register_forward_hook(norm_hook)
    params = [p for p in model.parameters() if p.requires_grad] + [p for m in extra for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sample = qwen25vl_sample(config, image_px, prompt_tokens, batch, device=dev)
    sample = {k: v.to(dev) for k, v in sample.items()}
    sample["pixel_values"] = sample["pixel_values"].to(dtype)
    targets = torch.arange(batch, device=dev) % (acc_k or 1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, loss = [], float("nan")
    for i in range(warmup + steps):
        _sync(dev)
        t0 = time.perf_counter()
        out = model(**sample, use_cache=False)
        total = out.loss
        if acc_k is not None:
            total = total + extra[2](captured["h"][:, -1], targets, extra[0].tokens())
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        loss = float(total.detach())
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    return {"mean_s": statistics.mean(times), "std_s": statistics.stdev(times) if len(times) > 1 else float("nan"),
            "peak_mib": peak, "loss": loss}


# ---------------------------------------------------------------------------------------------------- report
def _pct(x: float, ref: float) -> str:
    return f"{100.0 * x / ref:.3g}%"


def _g(x: float) -> str:
    return f"{x / 1e9:,.1f}" if x >= 1e11 else f"{x / 1e9:.3g}"


def _s(mean: float, std: float) -> str:
    return f"{mean:.3g} ± {std:.2g}" if not math.isnan(std) else f"{mean:.3g}"


def collect_flops(ks, pxs, batch, dim, prompt_tokens, config) -> dict:
    refs = {}
    for px in pxs:
        refs[px] = {
            "n_visual": visual_token_count(px, config),
            "forward": qwen25vl_forward_flops(px, prompt_tokens, batch, config),
            "train": qwen25vl_train_step_flops(px, prompt_tokens, batch, config),
        }
    rows = []
    for px in pxs:
        n = refs[px]["n_visual"]
        for k in ks:
            row = {"px": px, "k": k, "n_visual": n}
            for label, mode, heads in ACC_VARIANTS:
                row[f"acc_fb:{label}"] = acc_flops(mode, heads, batch, n, k, dim, backward=True)
            row["acc_fwd_auto"] = acc_flops("auto", 1, batch, n, k, dim, backward=False)
            for r in LOW_RANK:
                row[f"acc_fb:r{r}"] = acc_flops("projected", 1, batch, n, k, dim, backward=True, inner_dim=r)
            row["acc_cached"] = acc_cached_inference_flops(1, batch, n, k, dim)
            row["acm_fb"] = acm_flops(batch, k, dim, backward=True)
            row["acm_fwd"] = acm_flops(batch, k, dim, backward=False)
            rows.append(row)
    return {"refs": refs, "rows": rows}


def flops_markdown(fl: dict, ks2, ks9) -> tuple[str, list[str]]:
    refs, rows = fl["refs"], fl["rows"]
    md = ["| image | K | " + " | ".join(v[0] for v in ACC_VARIANTS) + " |", "|---|---|" + "---|" * len(ACC_VARIANTS)]
    for r in rows:
        t = refs[r["px"]]["train"]
        cells = [f"{_g(r[f'acc_fb:{v[0]}'])} ({_pct(r[f'acc_fb:{v[0]}'], t)})" for v in ACC_VARIANTS]
        md.append(f"| {r['px']} px | {r['k']} | " + " | ".join(cells) + " |")
    md += ["", "ACM and inference (GFLOPs; % of the 7B forward or LoRA step at the same batch):", "",
           "| image | K | ACM fwd+bwd (% step) | ACC(auto)+ACM fwd+bwd (% step) | ACC(auto)+ACM forward (% forward) "
           "| ACC inference, cached book (% forward) |", "|---|---|---|---|---|---|"]
    for r in rows:
        f, t = refs[r["px"]]["forward"], refs[r["px"]]["train"]
        both_fb = r["acc_fb:auto, 1 head"] + r["acm_fb"]
        both_f = r["acc_fwd_auto"] + r["acm_fwd"]
        md.append(f"| {r['px']} px | {r['k']} | {_g(r['acm_fb'])} ({_pct(r['acm_fb'], t)}) | {_g(both_fb)} "
                  f"({_pct(both_fb, t)}) | {_g(both_f)} ({_pct(both_f, f)}) | {_g(r['acc_cached'])} "
                  f"({_pct(r['acc_cached'], f)}) |")
    md += ["", "Low-rank ACC option (`ACCAdapter(inner_dim=r)`, projected order, 1 head: W_Q, W_K, W_V are d x r and "
           "W_O r x d). **Not the paper's ACC** (eq. 6 has d x d projections) and its effect on accuracy is not "
           "measured here; fwd+bwd GFLOPs (% of the LoRA step):", "",
           "| image | K | " + " | ".join(f"r = {r}" for r in LOW_RANK) + " |", "|---|---|" + "---|" * len(LOW_RANK)]
    for r in rows:
        t = refs[r["px"]]["train"]
        md.append(f"| {r['px']} px | {r['k']} | " + " | ".join(
            f"{_g(r[f'acc_fb:r{rk}'])} ({_pct(r[f'acc_fb:r{rk}'], t)})" for rk in LOW_RANK) + " |")
    verdicts = []

    def check(name, value, ref, limit):
        ok = value <= limit * ref
        ratio = value / ref
        margin = f"{100 * ratio:.3g}% vs target {100 * limit:.3g}%"
        verdicts.append(f"- {'MET' if ok else 'MISSED'}: {name}: {margin}"
                        + ("" if ok else f" ({ratio / limit:.2f}x over)"))

    for r in rows:
        f, t = refs[r["px"]]["forward"], refs[r["px"]]["train"]
        both_f = r["acc_fwd_auto"] + r["acm_fwd"]
        if r["k"] == 1000 and r["k"] in ks2:
            check(f"issue 2, ACC+ACM forward FLOPs at K=1000, {r['px']} px", both_f, f, 0.01)
        if r["k"] == 1000 and r["k"] in ks2:
            check(f"issue 5, AttTok (ACC auto + ACM) fwd+bwd FLOPs at K=1000, {r['px']} px, vs LoRA step",
                  r["acc_fb:auto, 1 head"] + r["acm_fb"], t, 0.01)
        if r["k"] == 10000 and r["k"] in ks2:
            check(f"issue 2, ACC+ACM forward FLOPs at K=10000, {r['px']} px", both_f, f, 0.05)
        if r["k"] == 10000 and r["k"] in ks9:
            check(f"issue 9, ACC (auto, 1 head) fwd+bwd FLOPs at K=10000, {r['px']} px, vs LoRA step",
                  r["acc_fb:auto, 1 head"], t, 0.01)
            for rk in LOW_RANK:
                check(f"issue 9, *option* low-rank ACC (r = {rk}, not the paper's) fwd+bwd FLOPs at K=10000, "
                      f"{r['px']} px, vs LoRA step", r[f"acc_fb:r{rk}"], t, 0.01)
    return "\n".join(md), verdicts


def timing_markdown(timings: list[dict]) -> str:
    md = ["| image | K | ACC variant | ACC fwd+bwd s | ACM fwd+bwd s | total s | runs | peak RSS MiB (added) |",
          "|---|---|---|---|---|---|---|---|"]
    for t in timings:
        r = t["result"]
        head = f"| {t['px']} px | {t['k']} | {t['label']} |"
        if "skipped" in r:
            md.append(head + f" {r['skipped']} | | | | |")
            continue
        note = " (single run over the time box)" if r["over_box"] else ""
        md.append(head + f" {_s(r['acc_mean_s'], r['acc_std_s'])} | {_s(r['acm_mean_s'], r['acm_std_s'])} | "
                  f"{_s(r['total_mean_s'], r['total_std_s'])}{note} | {r['n']} | "
                  f"{r['rss_peak_mib']:,.0f} (+{r['rss_delta_mib']:,.0f}) |")
    return "\n".join(md)


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration (seconds)")
    p.add_argument("--doc", type=Path, default=DOC, help="markdown file whose 'acc_cost' section is written")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=32, help="text tokens after the image in the 7B sample")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--time-box", type=float, default=20.0, help="seconds; a CPU configuration predicted or measured "
                   "to exceed it for one run is skipped / not repeated")
    p.add_argument("--budget", type=float, default=600.0, help="seconds of CPU timing in total")
    p.add_argument("--cpu-variants", default="auto:1,projected:28", help="mode:heads list timed on the CPU")
    p.add_argument("--no-cpu-timing", action="store_true")
    p.add_argument("--gpu", action="store_true", help="also time bf16 ACC and whole 7B LoRA steps on CUDA")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(time_acc_acm(json.loads(args.worker))))
        return ""
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    if args.quick:
        config, dim, pxs, ks2, ks9, batch = qwen25vl_tiny_config(), 56, (56,), (5, 100), (100,), 2
    else:
        config, dim, pxs, ks2, ks9, batch = qwen25vl_7b_config(), 3584, (224, 448), ISSUE2_K, ISSUE9_K, args.batch
    ks = sorted(set(ks2) | set(ks9))
    fl = collect_flops(ks, pxs, batch, dim, args.prompt_tokens, config)
    flops_md, verdicts = flops_markdown(fl, ks2, ks9)
    refs = fl["refs"]
    cmd = "python benchmarks/bench_acc.py" + (" --quick" if args.quick else "")

    timings: list[dict] = []
    if not args.no_cpu_timing:
        gflops = cpu_gflops()
        wanted = [tuple(v.split(":")) for v in args.cpu_variants.split(",")]
        plan = []
        for px in pxs:
            n = refs[px]["n_visual"]
            for k in ks:
                for mode, heads in wanted:
                    heads = int(heads)
                    label = f"{mode}, {heads} head{'s' if heads > 1 else ''}"
                    fb = acc_flops(mode, heads, batch, n, k, dim) + acm_flops(batch, k, dim)
                    plan.append({"px": px, "k": k, "label": label, "predicted_s": fb / (0.4 * gflops * 1e9),
                                 "spec": {"mode": mode, "heads": heads, "batch": batch, "n_visual": n, "k": k,
                                          "dim": dim, "repeats": args.repeats, "time_box_s": args.time_box}})
        if args.quick:
            plan = plan[:1]
        t_cpu = time.perf_counter()
        for item in sorted(plan, key=lambda x: x["predicted_s"]):
            spent = time.perf_counter() - t_cpu
            if item["predicted_s"] > args.time_box:
                item["result"] = {"skipped": f"skipped (CPU time box: ~{item['predicted_s']:.0f} s predicted per run)"}
            elif spent + (args.repeats + 1) * item["predicted_s"] > args.budget:
                item["result"] = {"skipped": "skipped (CPU time budget of the whole run spent)"}
            else:
                item["result"] = run_timing_subprocess(item["spec"], timeout_s=(args.repeats + 1) * args.time_box + 60)
            print(f"[bench_acc] {item['px']} px K={item['k']} {item['label']}: {item['result']}", flush=True)
            timings.append(item)
        timings.sort(key=lambda x: (x["px"], x["k"], x["label"]))

    gpu_md = ""
    if args.gpu:
        if not torch.cuda.is_available():
            gpu_md = "`--gpu` was given but CUDA is not available: no GPU rows."
        else:
            gpu_md = gpu_markdown(config, pxs, ks, batch, dim, args.prompt_tokens, quick=args.quick)

    name = "Qwen2.5-VL-7B" if not args.quick else "tiny Qwen2.5-VL (smoke test)"
    ref_lines = [
        f"- {px} px: {refs[px]['n_visual']} visual tokens/image; forward {_g(refs[px]['forward'])} GFLOPs, "
        f"LoRA step (fwd+bwd) {_g(refs[px]['train'])} GFLOPs ({refs[px]['train'] / refs[px]['forward']:.2f}x the "
        f"forward) for batch {batch}" for px in pxs
    ]
    md = f"""## ACC and ACM cost at {name} width (issues 2 and 9)

Hardware: {hardware()}. Reproduce: `{cmd}` (about {time.perf_counter() - t_start:.0f} s here).

Setting: d = {dim}, batch B = {batch}, N_v visual tokens per image from the image size, book of 3K tokens, fp32.
**No GPU was available for this run: every number below is a FLOP count or a CPU measurement. GPU time targets
(issue 9: ACC fwd+bwd <= 1% of a LoRA step, <= 0.2% of an inference forward) are not measured here.**
For orientation only, reported in the issue, not measured here: one 7B LoRA training step on an H100, batch 8,
takes {REPORTED_H100_STEP_S[224]} s at 224 px and {REPORTED_H100_STEP_S[448]} s at 448 px.

### Reference: one {name} forward and one LoRA training step
FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` over the whole `Qwen2_5_VLForConditionalGeneration`
built on the `meta` device (random, unallocated weights; the meta-device forward works in transformers 5.23, no
analytic fallback was needed), on a processor-shaped sample: image patches of 14 px (2 temporal copies), merged 2x2,
plus {args.prompt_tokens} text tokens; `lm_head` on every position. The LoRA step is the training setting: peft LoRA
r=16 on the decoder's q/k/v/o/gate/up/down (`LLM_LORA_TARGETS`), vision tower frozen without LoRA, frozen base
weights: its backward computes input gradients through every decoder layer but no weight gradients and stops at the
merged visual tokens, so a step is ~2x the decoder forward + 1x the vision forward, not the 3x of full fine-tuning
(counted, not assumed). Matrix products only (2 x multiply-adds); element-wise ops count zero.

{chr(10).join(ref_lines)}

### FLOPs of ACC forward+backward (GFLOPs, % of one LoRA step at the same batch)
ACC's weights and the book (learnable a_k rows) need gradients; the visual tokens, from the frozen vision tower, do
not. `auto` picks the cheaper order per call (by forward cost), so its column equals the `projected, 1 head` or the
`reassociated, 1 head` column in every row. The CPU timings further down run with a gradient for the visual tokens
too (an upper bound).

{flops_md}

### Targets (FLOPs; checkable on CPU)
{chr(10).join(verdicts)}

Why the K = 10000 targets are missed: with 1 head the dominant terms are the scores and the weighted sum over all
3K book tokens, 2 x 2 x (B N_v) x 3K x d FLOPs, i.e. ~0.43 GFLOPs per visual token at K = 10000, d = 3584, against
~14 GFLOPs per token for the 7B decoder plus ~5 GFLOPs per merged token for the vision encoder: ~2.2% of the forward
for the visual positions before the text tokens dilute it. No evaluation order removes that term (a cached book
removes only the book projections). ACM adds theta on all 3K book tokens, 2 x 3K x d^2 FLOPs per forward (0.77
TFLOPs at K = 10000) independent of the batch, which dominates at 224 px; it is also why K = 1000 misses the 1%
forward target at 224 px by a small margin (ACM's forward is about half of the ACC+ACM forward there). Reaching 1% at K = 10000 needs a change of
the method, e.g. scores in a low-rank space (r << d) or attention to a top-k subset of the books for ACC, and a
low-rank theta or sampled negative books for ACM. The low-rank ACC option counted above (`inner_dim`, e.g.
`--acc_inner_dim 128` in `train_qwen25vl.json`) is such a change; it is off by default because it departs from the
paper and its accuracy is unmeasured.

### CPU wall time and peak memory of ACC + ACM forward+backward (fp32)
One subprocess per configuration (its max RSS is the peak; "added" = above the RSS after creating the inputs and
modules), mean ± std over {args.repeats} runs after one warm-up, {torch.get_num_threads()} torch threads.
1-minute load average {load_start[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of this run: other jobs
shared the {os.cpu_count()} cores, so these times are upper bounds for an idle machine.
Configurations whose one run is predicted (from the FLOP count and this CPU's matmul rate) to exceed
{args.time_box:.0f} s are marked skipped.

{timing_markdown(timings) if timings else "(CPU timing not run)"}
"""
    if gpu_md:
        md += "\n### GPU (bf16)\n" + gpu_md + "\n"
    write_section(SECTION, md, doc=args.doc)
    return md


def gpu_markdown(config, pxs, ks, batch, dim, prompt_tokens, quick: bool = False) -> str:
    """bf16 CUDA timings: ACC fwd+bwd per variant, and whole LoRA steps with and without ACC (+ACM)."""
    lines = [f"Device: {torch.cuda.get_device_name(0)}.", "",
             "| image | K | ACC variant | ACC fwd+bwd s | peak MiB |", "|---|---|---|---|---|"]
    for px in pxs:
        n = visual_token_count(px, config)
        for k in ks:
            for label, mode, heads in ACC_VARIANTS:
                try:
                    r = time_acc_device(mode, heads, batch, n, k, dim)
                    lines.append(f"| {px} px | {k} | {label} | {_s(r['mean_s'], r['std_s'])} | {r['peak_mib']:,.0f} |")
                except torch.cuda.OutOfMemoryError:
                    lines.append(f"| {px} px | {k} | {label} | out of memory | |")
                torch.cuda.empty_cache()
    lines += ["", "| image | ACC K | LoRA step s | peak MiB |", "|---|---|---|---|"]
    for px in pxs:
        for k in (None, 1000, 10000):
            try:
                r = lora_step_time(config, px, batch, prompt_tokens, acc_k=k)
                lines.append(f"| {px} px | {k or 'none'} | {_s(r['mean_s'], r['std_s'])} | {r['peak_mib']:,.0f} |")
            except torch.cuda.OutOfMemoryError:
                lines.append(f"| {px} px | {k or 'none'} | out of memory | |")
            torch.cuda.empty_cache()
    return "\n".join(lines)


if __name__ == "__main__":
    main()
