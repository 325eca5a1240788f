"""Benchmark: DICOM ingestion, header-only and decoding (files/s), and reader throughput (images/s) on a synthetic
archive.

    python benchmarks/bench_dicom.py --n 10000 [--size 256] [--read 1000] [--out docs/benchmarks.md]

Builds N uncompressed 16-bit MONOCHROME2 DICOM files (size x size, with a window) in a temporary folder, times
``attok_monai.ingest.ingest`` (header-only scan + manifest write; the default, which also decodes each image; a re-run
with nothing new) and ``read_dicom_frame`` on the first ``--read``
files, and prints (and writes) a markdown table with the hardware.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from attok_monai.data.dicom import read_dicom_frame  # noqa: E402
from attok_monai.ingest import ingest  # noqa: E402
from attok_monai.provenance import cpu_model  # noqa: E402
from benchmarks._report import DOC, write_section  # noqa: E402


def build(root: Path, n: int, size: int) -> float:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    t0 = time.perf_counter()
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
        ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = f"Synthetic^{i}", f"P{i:06d}", "DX"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = pixels
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        ds.save_as(sub / f"{i:06d}", enforce_file_format=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="number of files (default 10000)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    ap.add_argument("--read", type=int, default=1000, help="files decoded for the reader timing (default 1000)")
    ap.add_argument("--out", default=str(DOC), help="markdown doc whose 'dicom' section is written ('' to skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        root.mkdir()
        t_build = build(root, args.n, args.size)
        t0 = time.perf_counter()
        rep = ingest(root, out=Path(tmp) / "fast.jsonl", salt="benchmark-salt-0001", unlabelled="keep", verify=False)
        t_ingest = time.perf_counter() - t0
        assert rep.added == args.n, rep.skipped[:3]
        t0 = time.perf_counter()
        rep = ingest(root, out=Path(tmp) / "manifest.jsonl", salt="benchmark-salt-0001", unlabelled="keep")
        t_decode = time.perf_counter() - t0
        assert rep.added == args.n, rep.skipped[:3]
        t0 = time.perf_counter()
        rep2 = ingest(root, out=Path(tmp) / "manifest.jsonl", salt="benchmark-salt-0001", unlabelled="keep")
        t_rerun = time.perf_counter() - t0
        assert rep2.added == 0 and rep2.kept == args.n
        files = sorted(p for p in root.rglob("*") if p.is_file())[: args.read]
        t0 = time.perf_counter()
        for p in files:
            img, _ = read_dicom_frame(p)
        t_read = time.perf_counter() - t0
    lines = [
        "| benchmark | files | seconds | throughput |",
        "|---|---:|---:|---:|",
        f"| ingestion, header only (`--header-only`: scan + manifest) | {args.n} | {t_ingest:.2f} | "
        f"{args.n / t_ingest:.0f} files/s |",
        f"| ingestion, default (scan + decode each image + manifest) | {args.n} | {t_decode:.2f} | "
        f"{args.n / t_decode:.0f} files/s |",
        f"| re-run, nothing new (keys already in the manifest) | {args.n} | {t_rerun:.2f} | "
        f"{args.n / t_rerun:.0f} files/s |",
        f"| reader: read_dicom_frame -> (1,{args.size},{args.size}) float32 | {len(files)} | {t_read:.2f} | "
        f"{len(files) / t_read:.0f} images/s |",
    ]
    hw = (f"Hardware: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
          f"pydicom {pydicom.__version__}; single process. Synthetic archive: {args.n} uncompressed 16-bit "
          f"{args.size}x{args.size} DX files (writing them took {t_build:.1f} s).")
    text = (f"## DICOM ingestion and reader throughput (issue 6)\n\n{hw} Reproduce: "
            f"`python benchmarks/bench_dicom.py --n {args.n}`.\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.out:
        write_section("dicom", text, doc=Path(args.out))


if __name__ == "__main__":
    main()
