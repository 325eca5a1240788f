"""benchmarks/kernel_fingerprint.py: column headings, the table's marks, hashes that repeat, a refused pin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.kernel_fingerprint import families, label, table

REPO = Path(__file__).resolve().parents[1]
AVX2 = "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"


def test_a_column_heading_names_the_cpu_and_the_pins_beyond_make_trains():
    assert label(f"AMD EPYC (family 25, model 1); {AVX2}") == "AMD EPYC (family 25, model 1), AVX2 pins"
    cbwr = "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"
    assert label(f"Xeon (family 6, model 167); {cbwr}") == "Xeon (family 6, model 167), AVX2 pins + MKL_CBWR=AVX2"
    assert label("Xeon (family 6, model 167); none") == "Xeon (family 6, model 167), no pins"
    assert label("cpu; ATEN_CPU_CAPABILITY=avx2") == "cpu, ATEN_CPU_CAPABILITY=avx2"


def test_the_table_marks_only_families_whose_columns_disagree():
    state = {f"amd; {AVX2}": {"1": {"gemm": "aaaa", "conv": "cccc"}},
             f"intel; {AVX2}": {"1": {"gemm": "aaaa", "conv": "dddd"}, "2": {"gemm": "eeee"}}}
    lines = table(state).splitlines()
    assert lines[0] == "| family | threads | amd, AVX2 pins | intel, AVX2 pins |"
    assert "| conv (differs) | 1 | cccc | dddd |" in lines
    assert "| gemm | 1 | aaaa | aaaa |" in lines
    assert "| gemm | 2 | - | eeee |" in lines  # a thread count one machine did not run is no difference


def test_a_family_hash_repeats_and_tells_families_apart():
    fams = families()
    assert fams["mkl_gemm_33x100x7"]() == fams["mkl_gemm_33x100x7"]()
    assert len({fams[name]() for name in ("mkl_gemm_33x100x7", "batch_norm", "sdpa")}) == 3


def test_an_unknown_pin_is_refused_in_one_line_before_anything_runs():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernel_fingerprint.py"), "--pin", "MKL_CBWR"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and "--pin 'MKL_CBWR': expected NAME=VALUE" in out.stderr


def test_a_failed_measurement_says_so_and_records_nothing():
    state = REPO / "benchmarks" / ".state" / "kernel_fingerprints.json"
    before = state.read_bytes() if state.exists() else None
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernel_fingerprint.py"), "--threads", "0"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and "the measuring process failed" in out.stderr
    assert (state.read_bytes() if state.exists() else None) == before
