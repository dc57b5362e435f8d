"""Camera-like recorded streams for the line benchmarks: real ELPV cells and DeepPCB boards,
upscaled to 1, 2 or 5 megapixels, written as folders of JPEG files or as MJPEG videos.

The pictures are real, their resolution is not: a 300x300 ELPV cell (or a 640x640 DeepPCB
crop) upscaled to 1632x1224 has the size and JPEG cost of a 2-megapixel camera frame, not its
fine detail. Each source of a stream set gets its own images (by default ELPV and DeepPCB
alternate by source; :data:`KINDS`), so sources never send identical frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Frame sizes (width, height) by megapixels, 4:3 like most machine-vision sensors.
SIZES = {1: (1152, 864), 2: (1632, 1224), 5: (2592, 1944)}
JPEG_QUALITY = 90
DEEPPCB = Path("/work/shared/datasets/deeppcb")


#: Stream kinds: ELPV mono test cells (two thirds of them defective), DeepPCB test boards (half
#: defective; an ELPV model rejects them all), and "elpv-line", ELPV mono cells as a line sends
#: them: good cells (training, validation and test normals) with one defective test cell in
#: LINE_DEFECT_EVERY.
KINDS = ("elpv", "deeppcb", "elpv-line")
LINE_DEFECT_EVERY = 20


def _elpv_line() -> list[Path]:
    from ffcore.data import elpv

    split = elpv("mono")
    good = [s.path for s in split.train + split.val + split.test if s.label == 0]
    bad = [s.path for s in split.test if s.label == 1]
    out, g, b = [], iter(good), iter(bad)
    for i in range(len(good) + len(good) // (LINE_DEFECT_EVERY - 1)):
        nxt = next(b, None) if i % LINE_DEFECT_EVERY == LINE_DEFECT_EVERY - 1 else next(g, None)
        if nxt is None:
            break
        out.append(nxt)
    return out


def source_images(kind: str, count: int, offset: int = 0) -> list[Path]:
    """Paths of ``count`` real images of a stream kind (:data:`KINDS`)."""
    if kind == "elpv":
        from ffcore.data import elpv

        paths = [s.path for s in elpv("mono").test]
    elif kind == "elpv-line":
        paths = _elpv_line()
    else:
        paths = sorted((DEEPPCB / "test" / "good").glob("*.png")) + sorted((DEEPPCB / "test" / "defect").glob("*.png"))
        if not paths:
            raise SystemExit(f"no DeepPCB images under {DEEPPCB}/test (give --kinds elpv)")
    if len(paths) < offset + count:
        raise SystemExit(f"{kind}: {len(paths)} images, {offset + count} needed")
    return paths[offset : offset + count]


def upscale(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image as a BGR frame of ``size`` (width, height), bicubic."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: not readable")
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def jpeg_folder(folder: Path, paths: list[Path], size: tuple[int, int]) -> Path:
    """``folder`` with one JPEG frame per image (written once; reused when complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        out = folder / f"{i:05d}.jpg"
        if not out.is_file():
            cv2.imwrite(str(out), upscale(p, size), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return folder


def mjpeg_video(path: Path, paths: list[Path], size: tuple[int, int], fps: float = 25.0) -> Path:
    """An MJPEG AVI of the images (each frame one JPEG, as an MJPEG camera records)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write MJPG to {path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, JPEG_QUALITY)
    for p in paths:
        writer.write(upscale(p, size))
    writer.release()
    return path


def streams(work: Path, megapixels: int, sources: int, frames: int, fmt: str,
            kinds: tuple[str, ...] = ("elpv", "deeppcb")) -> list[Path]:
    """``sources`` streams of ``frames`` frames each at ``megapixels`` MP: JPEG folders
    (``fmt="jpeg"``) or MJPEG videos (``fmt="mjpeg"``), under ``work``; source k shows images of
    ``kinds[k % len(kinds)]``, each source its own."""
    size = SIZES[megapixels]
    out = []
    for k in range(sources):
        kind = kinds[k % len(kinds)]
        nth = k // len(kinds)
        paths = source_images(kind, frames, offset=nth * frames)
        name = f"{megapixels}mp-{kind}-{nth}-{frames}"
        out.append(jpeg_folder(work / name, paths, size) if fmt == "jpeg" else
                   mjpeg_video(work / f"{name}.avi", paths, size))
    return out
