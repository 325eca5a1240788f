"""Write one section of docs/benchmarks.md in place (between BEGIN/END markers), atomically, with the hardware."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery number here was measured by a script under `benchmarks/`; each section names the command "
    "that reproduces it and the hardware it ran on. `python benchmarks/run_all.py` reruns them all.\n"
)


def hardware() -> str:
    """CPU model, the instruction set torch's CPU kernels use and the variables pinning the code paths, when set (both
    change a run's weights: docs/study_defaults.md, "Round 6" and "Round 11"), core count, torch version and GPU (if
    any), as one line."""
    from attok_monai.provenance import cpu_kernel_pins, cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    isa = torch.backends.cpu.get_cpu_capability()
    pins = cpu_kernel_pins()
    isa += "" if pins == "none" else f" (pinned: {pins})"
    return f"{cpu}, torch CPU kernels {isa}, {os.cpu_count()} logical cores visible, torch {torch.__version__}, {gpu}"


def write_section(name: str, markdown: str, doc: Path = DOC, header: str | None = None) -> None:
    """Replace (or append) the section ``name`` of ``doc`` with ``markdown``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else (header or HEADER)
    block = f"<!-- BEGIN {name} -->\n{markdown.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=doc.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, doc)
