"""What ``ffrt run`` writes into ``--out DIR``: one JSON line per frame, CSV, pictures, summary.

    results.jsonl           one JSON object per frame, whatever became of it ("status")
    results.csv             the same, flat (--csv)
    overlays/SOURCE/*.png   heatmap over the frame, for rejected frames (--overlays)
    masks/SOURCE/*.png      the defect mask (0/255), for rejected frames (--masks)
    summary.json            counts per source and latencies; rewritten while the run goes

A crash never leaves half a line: each line is handed to the kernel in one ``write(2)``
on a descriptor opened with O_APPEND, straight from the bytes (no user-space buffer that a
crash would lose or cut). A write that the kernel takes only in part (disk full) is taken
back (the file is cut to its length before that line) and the run fails with the reason.
A power cut can lose what the OS had not written back since the last ``sync`` (done at
least once a second by the run, and at its end), but what survives is whole lines.
Pictures and the summary are written atomically (temp file + rename).

File names that are not valid UTF-8 are kept as the OS gives them: results.csv holds their
raw bytes, results.jsonl the JSON escapes of Python's surrogateescape form ("\\udce9"), which
os.fsencode() turns back into those bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
from ffcore.files import atomic_write_bytes

from ..errors import FFRTError
from ..preprocess import ReducedFrame
from ..runreport import check_output_dir

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
CSV_COLUMNS = (
    "source", "frame", "file", "video_ms", "time", "status", "verdict", "score", "normalized_score",
    "regions", "largest_region_px", "latency_ms", "queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "error",
)


class LineFile:
    """An append-only text file that only ever holds whole lines. One writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_EXCL: never append to an earlier run's file, even if it appeared after the check.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._size = 0
        self.lines = 0

    def write_line(self, text: str) -> None:
        # surrogateescape: a file name that is not UTF-8 (Python holds its bytes as lone
        # surrogates) is written as the bytes the OS gave, not refused mid-run.
        data = (text.rstrip("\n") + "\n").encode("utf-8", "surrogateescape")
        try:
            n = os.write(self._fd, data)  # one system call: never a loop that a crash could cut between
        except OSError as e:  # nothing was written (write(2) returned -1)
            raise FFRTError(f"{self.path}: cannot write ({e.strerror or e}); the results up to line {self.lines} are complete") from e
        if n != len(data):
            os.ftruncate(self._fd, self._size)
            raise FFRTError(
                f"{self.path}: the disk took only {n} of {len(data)} bytes of line {self.lines + 1} (full?); the part was "
                f"removed, the results up to line {self.lines} are complete. Free space and run again."
            )
        self._size += n
        self.lines += 1

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


class RunOutputs:
    """The files of one run in ``folder``. Call :meth:`check` before loading the model."""

    def __init__(self, folder: Path, csv_too: bool = False, overlays: bool = False, masks: bool = False) -> None:
        self.folder = Path(folder)
        self.csv_too, self.overlays, self.masks = csv_too, overlays, masks
        self.jsonl: LineFile | None = None
        self.csv: LineFile | None = None

    def check(self) -> None:
        """Fail now, not after the first frame, if the folder cannot be written or already
        holds an earlier run's results (they would be mixed with this run's)."""
        check_output_dir(self.folder, "--out")
        for name in (RESULTS_JSONL, RESULTS_CSV):
            if (self.folder / name).exists():
                raise FileExistsError(
                    f"--out {self.folder}: already holds {name} from an earlier run; choose a new folder, or move the old results away"
                )

    def open(self) -> None:
        self.jsonl = LineFile(self.folder / RESULTS_JSONL)
        if self.csv_too:
            self.csv = LineFile(self.folder / RESULTS_CSV)
            self.csv.write_line(_csv_row(CSV_COLUMNS))

    def write(self, record: dict, image: np.ndarray | None = None, result=None) -> None:
        """One frame: its pictures first (when rejected and asked for), then its lines, so
        that a line never names a picture that is not there."""
        if result is not None and record.get("verdict") == "FAIL" and (self.overlays or self.masks):
            stem = f"{record['frame']:06d}" + (f"_{Path(record['file']).stem}" if record.get("file") else "")
            if isinstance(image, ReducedFrame):
                image = image.image  # the overlay is drawn at the resolution the frame was decoded at
            if self.overlays and image is not None:
                record["overlay"] = self._picture("overlays", record["source"], stem, lambda: _overlay(image, result))
            if self.masks:
                record["mask"] = self._picture("masks", record["source"], stem, lambda: _mask(result))
        self.jsonl.write_line(json.dumps(record, allow_nan=False, separators=(",", ":")))
        if self.csv is not None:
            self.csv.write_line(_csv_row(_csv_values(record)))

    def _picture(self, kind: str, source: str, stem: str, png) -> str:
        rel = Path(kind) / source / f"{stem}.png"
        atomic_write_bytes(self.folder / rel, png())
        return rel.as_posix()

    def write_summary(self, summary: dict) -> None:
        atomic_write_bytes(self.folder / SUMMARY_JSON, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())

    def sync(self) -> None:
        for f in (self.jsonl, self.csv):
            if f is not None:
                f.sync()

    def close(self) -> None:
        for f in (self.jsonl, self.csv):
            if f is not None:
                f.close()

    def paths(self) -> list[str]:
        files = [f.path for f in (self.jsonl, self.csv) if f is not None] + [self.folder / SUMMARY_JSON]
        files += [self.folder / d for d, on in (("overlays", self.overlays), ("masks", self.masks)) if on]
        return [str(p) for p in files]


def _overlay(image: np.ndarray, result) -> bytes:
    from ..overlay import overlay_png

    return overlay_png(image, result)


def _mask(result) -> bytes:
    from ..overlay import encode_png

    return encode_png(result.mask.astype(np.uint8) * 255, "the mask")


def _csv_values(record: dict) -> list:
    regions = record.get("regions")
    flat = {
        **record,
        "regions": None if regions is None else len(regions),
        "largest_region_px": regions[0]["area_px"] if regions else None,
    }
    return [flat.get(c) for c in CSV_COLUMNS]


def _csv_row(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()
