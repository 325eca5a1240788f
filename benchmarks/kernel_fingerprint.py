"""Which CPU kernel family makes two machines train different weights from the same seed: a fingerprint per family.

The same command, seed and pins give byte-identical models on CPUs of one vendor and other weights across vendors
(docs/study_defaults.md, rounds 11, 23 and 32). This script runs each kernel family a compact GPTv uses (MKL's
matrix products, oneDNN's and ATen's convolutions, batch norm, attention, the element-wise and reduction kernels,
AdamW) on fixed seeded inputs, forward and backward, and hashes the outputs; then a small ResNet + Qwen2 model for a
few AdamW steps (the weights' MD5). Run it on two machines under the same pins and compare the tables: the families
whose hashes differ are the ones that separate them.

Results are kept per CPU kind and pins in ``benchmarks/.state/kernel_fingerprints.json`` and written as one table
(a column per CPU kind) to docs/benchmarks.md, section ``kernel_fingerprints``.

    python benchmarks/kernel_fingerprint.py                       # under the AVX2 pins of `make train`
    python benchmarks/kernel_fingerprint.py --pin MKL_CBWR=AVX2   # one more pin (a column of its own)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
STATE = Path(__file__).resolve().parent / ".state" / "kernel_fingerprints.json"


def _md5(*tensors) -> str:
    h = hashlib.md5()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def _with_grads(fn: Callable, *inputs):
    """``fn(*inputs)`` and the gradients of its sum of squares w.r.t. each input (all float32 leaves)."""
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    out.pow(2).sum().backward()
    return (out, *[x.grad for x in leaves])


def families() -> dict[str, Callable[[], str]]:
    """Name -> a function that runs the family on seeded inputs and returns its hash."""
    import torch
    import torch.nn.functional as F

    def gen(*shape: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(*shape, generator=g)

    def gemm(m: int, k: int, n: int) -> Callable[[], str]:
        return lambda: _md5(*_with_grads(torch.mm, gen(m, k), gen(k, n, seed=1)))

    def conv(mkldnn: bool) -> Callable[[], str]:
        def run() -> str:
            with torch.backends.mkldnn.flags(enabled=mkldnn):
                return _md5(*_with_grads(lambda x, w: F.conv2d(x, w, padding=1), gen(8, 16, 14, 14), gen(32, 16, 3, 3, seed=1)))
        return run

    def batch_norm() -> str:
        return _md5(*_with_grads(lambda x: F.batch_norm(x, None, None, training=True), gen(8, 32, 7, 7)))

    def sdpa() -> str:
        q, k, v = gen(4, 4, 40, 64), gen(4, 4, 40, 64, seed=1), gen(4, 4, 40, 64, seed=2)
        return _md5(*_with_grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v))

    def elementwise() -> str:
        x = gen(64, 257)
        return _md5(*_with_grads(lambda t: F.silu(t) + F.gelu(t) + torch.tanh(t) + torch.exp(-t.abs()) + torch.log1p(t.abs()), x))

    def rms_softmax() -> str:
        def f(t):
            t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)
            return F.log_softmax(t, -1) + F.softmax(t, 0)
        return _md5(*_with_grads(f, gen(48, 513)))

    def reduction() -> str:
        x = gen(1 << 20)
        return _md5(x.sum().reshape(1), x.view(1024, -1).mean(0), x.view(-1, 1024).norm(dim=1))

    def adamw() -> str:
        params = [gen(257, 129).requires_grad_(True), gen(33).requires_grad_(True)]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = gen(*p.shape, seed=10 * step + i + 1)
            opt.step()
        return _md5(*params)

    return {
        "mkl_gemm_64x256x256": gemm(64, 256, 256), "mkl_gemm_197x768x3072": gemm(197, 768, 3072),
        "mkl_gemm_33x100x7": gemm(33, 100, 7), "mkl_gemm_8x256x5": gemm(8, 256, 5),
        "conv2d_onednn": conv(True), "conv2d_aten": conv(False), "batch_norm": batch_norm, "sdpa": sdpa,
        "elementwise": elementwise, "rmsnorm_softmax": rms_softmax, "reduction": reduction, "adamw": adamw,
        "model_3_steps": model_steps, "model_3_steps_no_onednn": lambda: model_steps(onednn=False),
    }


def model_steps(onednn: bool = True) -> str:
    """A MONAI ResNet (28 px, 3 channels) whose pooled features prefix a 2-layer Qwen2 LM of the bundles' width
    (hidden 256, 4 heads), 3 AdamW steps on seeded data; the MD5 of the weights. ``onednn=False``: torch's own
    convolutions instead of oneDNN's (``torch.backends.mkldnn`` off), MKL's matrix products then doing their work."""
    import torch
    from monai.networks.nets import ResNet
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    vision = ResNet("basic", [1, 1, 1, 1], [1, 1, 1, 1], spatial_dims=2, n_input_channels=3, num_classes=256)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    params = [*vision.parameters(), *lm.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(1)
    with torch.backends.mkldnn.flags(enabled=onednn):
        for _ in range(3):
            images, ids = torch.randn(8, 3, 28, 28, generator=g), torch.randint(0, 300, (8, 12), generator=g)
            embeds = torch.cat([vision(images)[:, None], lm.get_input_embeddings()(ids)], 1)
            labels = torch.cat([torch.full((8, 1), -100), ids], 1)
            loss = lm(inputs_embeds=embeds, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _md5(*params)


def measure(threads: int) -> dict[str, str]:
    import torch

    torch.set_num_threads(threads)
    return {name: fn() for name, fn in families().items()}


def column() -> str:
    """This machine and its pins: ``<cpu_model>; <pins>`` (the state's key)."""
    from attok_monai.provenance import cpu_kernel_pins, cpu_model

    return f"{cpu_model()}; {cpu_kernel_pins()}"


def label(key: str) -> str:
    """A column's heading: the CPU, then ``AVX2 pins`` for the three pins of `make train` and any other pin after a
    ``+`` (``AMD EPYC (family 25, model 1), AVX2 pins + MKL_CBWR=AVX2``)."""
    from attok_monai.provenance import AVX2_KERNEL_PINS

    cpu, _, pins = key.rpartition("; ")
    items = [] if pins == "none" else pins.split()
    avx2 = {f"{k}={v}" for k, v in AVX2_KERNEL_PINS.items()}
    rest = [p for p in items if p not in avx2]
    head = "AVX2 pins" if avx2 <= set(items) else " ".join(p for p in items if p in avx2) or "no pins"
    return f"{cpu}, {head}" + "".join(f" + {p}" for p in rest)


def table(state: dict[str, dict[str, dict[str, str]]]) -> str:
    """A markdown table: a row per family and thread count, a column per CPU kind and pins."""
    cols = sorted(state)
    rows = [f"| family | threads | {' | '.join(map(label, cols))} |", "|---|---|" + "---|" * len(cols)]
    keys = sorted({(fam, th) for c in cols for th in state[c] for fam in state[c][th]}, key=lambda x: (x[1], x[0]))
    for fam, th in keys:
        cells = [state[c].get(th, {}).get(fam, "-") for c in cols]
        mark = "" if len(set(cells) - {"-"}) <= 1 else " (differs)"
        rows.append(f"| {fam}{mark} | {th} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main() -> None:
    from benchmarks.bench_bundles import pin_kernels

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", choices=("avx2", "native"), default="avx2",
                    help="avx2 (default): the pins of `make train` (a variable already set is kept); native: none")
    ap.add_argument("--pin", action="append", default=[], metavar="NAME=VALUE",
                    help="one more code-path variable (attok_monai.provenance.KERNEL_PIN_VARIABLES), e.g. MKL_CBWR=AVX2")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # the pins act only when set before the process's first tensor operation
        print(json.dumps({"column": column(), "threads": {str(t): measure(t) for t in args.threads}}))
        return
    from attok_monai.provenance import KERNEL_PIN_VARIABLES

    env = dict(os.environ)
    pin_kernels(args.kernels, env)
    for item in args.pin:
        name, sep, value = item.partition("=")
        if not sep or name not in KERNEL_PIN_VARIABLES:
            sys.exit(f"--pin {item!r}: expected NAME=VALUE with NAME one of {', '.join(KERNEL_PIN_VARIABLES)}")
        env[name] = value
    child = subprocess.run([sys.executable, __file__, "--child", "--threads", *map(str, args.threads)], env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"kernel_fingerprint: the measuring process failed (exit {child.returncode}):\n"
                 + "\n".join(child.stderr.strip().splitlines()[-5:]))
    result = json.loads(child.stdout.strip().splitlines()[-1])
    from attok_monai.fileio import atomic_write_text
    from benchmarks._report import write_section

    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    state[result["column"]] = result["threads"]
    STATE.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(STATE, json.dumps(state, indent=1, sort_keys=True) + "\n")
    text = table(state)
    write_section("kernel_fingerprints", (
        "### CPU kernel fingerprints\n\nFirst 8 hex digits of the MD5 of each kernel family's outputs and input "
        "gradients on seeded inputs (`model_3_steps`: the weights of a ResNet + 2-layer Qwen2 after 3 AdamW steps; "
        "`_no_onednn`: the same with torch's own convolutions), per CPU kind and code-path pins (a column each; "
        "\"(differs)\" marks a family whose columns disagree). "
        "Reproduce, on each machine: `python benchmarks/kernel_fingerprint.py` (add `--pin MKL_CBWR=AVX2` for that "
        "column). torch " + __import__("torch").__version__ + ".\n\n" + text))
    print(text)


if __name__ == "__main__":
    main()
