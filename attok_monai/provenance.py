"""Where a run comes from: installed package versions, the git state of the source checkout, the device, and the
checksums of its data files."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["package_versions", "git_state", "cpu_model", "cpu_kernel_pins", "device_info", "file_md5"]

# The environment variables that choose the CPU code paths of torch (ATen), MKL and oneDNN: each changes a trained
# model's last bits (docs/study_defaults.md, rounds 6 and 11); pinned to AVX2, an AVX-512 CPU gives an AVX2 CPU's bits.
KERNEL_PIN_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                        "DNNL_MAX_CPU_ISA")
# The pins that make an x86-64 CPU with AVX2 or newer (AVX-512 included) take the code paths of an AVX2-only one
# (measured: generalist E rebuilt bit for bit on an AVX-512 EPYC with them, other bits without; round 11). They act
# only when set before the process's first tensor operation: set them in the environment of the command.
AVX2_KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``{distribution name: installed version, or None when it is not installed}``."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_state() -> tuple[str, str]:
    """``(commit, dirty)`` of the checkout this package runs from: the HEAD commit and ``"True"``/``"False"`` for
    uncommitted changes to tracked files; ``("unknown", "unknown")`` outside a git checkout. Asked once a process."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown", "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), str(bool(status.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name with its family and model numbers when the name alone does not tell two CPU kinds apart
    (``/proc/cpuinfo``: ``AMD EPYC (family 25, model 1)``; ``platform.processor()`` elsewhere; ``unknown``)."""
    import platform

    try:
        fields: dict[str, str] = {}
        for line in Path(cpuinfo).read_text(errors="ignore").splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if fields:
                    break  # the first processor's block is read
                continue
            fields.setdefault(key.strip().lower(), value.strip())
        if "model name" in fields:
            numbers = [f"{k} {fields[k2]}" for k, k2 in (("family", "cpu family"), ("model", "model")) if k2 in fields]
            return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_kernel_pins(environ: dict[str, str] | None = None) -> str:
    """The CPU code-path pins set in the environment (``KERNEL_PIN_VARIABLES``) as ``NAME=value`` joined by spaces,
    in that order, or ``"none"``. Logged with ``cpu_capability``: two runs give the same bits only under the same
    pins on the same CPU kind."""
    env = os.environ if environ is None else environ
    pins = [f"{k}={env[k]}" for k in KERNEL_PIN_VARIABLES if env.get(k)]
    return " ".join(pins) or "none"


def device_info(device: torch.device | str) -> dict[str, str]:
    """Device, world size and the versions of the libraries that shape a run (logged with every run)."""
    import torch  # here, so that reading versions and the git state needs no torch

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    # the CPU thread count changes how reductions are split, so two runs with the same seed give the same weights only
    # at the same count: logged so a rerun can match it
    # the CPU model and the vector ISA torch's kernels dispatch to (AVX2, AVX512 ...) change the float rounding too:
    # the same seed gives the same weights on machines that agree on both (measured: one commit's main job ended at
    # 58.3/42.9 on one machine and 62.5/45.9 on another)
    info = {"device": str(device), "device_name": name, "world_size": str(world), "torch_version": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_kernel_pins": cpu_kernel_pins()}
    pkgs = ("monai", "pytorch-ignite", "transformers", "peft", "numpy", "attok-monai")
    info.update({f"{k.replace('-', '_')}_version": v or "absent" for k, v in package_versions(pkgs).items()})
    return info


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a data file (logged to MLflow so a run names the exact data it saw). MONAI's ``check_hash`` only
    compares against a known value; this computes the value to log."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
