"""Condition images of odd formats through the CLI's reader (``glmimage::cli::read_image``) against
the reference's ``Image.open(p).convert("RGB")``.

Each case writes one file with PIL (or by hand, for what PIL cannot write: 16-bit RGB, low bit
depths, a huge IHDR), reads it with PIL and with ``tests/unit/read_image_probe.cpp`` (torch-free,
compiled here with the system compiler the way tests/fuzz/build.sh compiles the reader), and checks
that an accepted image equals PIL's RGB conversion exactly (``max_abs_diff`` 0, JPEG included: the
same libjpeg-turbo algorithms, integer DCT and fancy upsampling, give the same bytes) and that a
rejected one gives a clear ``InputError`` naming the problem, never a crash or a hang.

Deliberate differences from PIL: only PNG and JPEG are read (GIF, BMP, WebP, TIFF: "not a PNG or
JPEG"), and images over 16384 a side or 64 Mpixels are refused before decoding (PIL refuses only
past 179 Mpixels). ``python3 tests/python/test_condition_images.py`` prints the table.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PROBE_SOURCES = ["tests/unit/read_image_probe.cpp", "cli/png_writer.cpp", "cli/png_writer.h", "src/core/errors.cpp",
                 "include/glmimage/errors.h", "include/glmimage/glmimage.h", "include/glmimage/options.h"]
PROBE_TIMEOUT_S = 20  # a reader that blocks (a FIFO opened for reading) fails instead of hanging the tests


# ---------------------------------------------------------------------------------------------
# The probe


def build_probe() -> Path:
    """Compiles the probe once per source version into $BUILD_DIR/read_image_probe/ (~4 s)."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        pytest.skip("no C++ compiler")
    cmd = [cxx, "-std=c++17", "-O1", "-I" + str(REPO / "include"), "-I" + str(REPO / "src"), "-I/usr/include/stb"]
    h = hashlib.sha256(" ".join(cmd).encode())
    for s in PROBE_SOURCES:
        h.update((REPO / s).read_bytes())
    out_dir = Path(os.environ.get("GLMI_PROBE_DIR", REPO / os.environ.get("BUILD_DIR", "build") / "read_image_probe"))
    exe = out_dir / f"read_image_probe-{h.hexdigest()[:16]}"
    if not exe.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".tmp{os.getpid()}")
        srcs = [str(REPO / s) for s in PROBE_SOURCES if s.endswith(".cpp")]
        subprocess.run(cmd + srcs + ["-ljpeg", "-o", str(tmp)], check=True)
        tmp.replace(exe)
        for old in out_dir.glob("read_image_probe-*"):  # probes of earlier source versions
            if old != exe:
                old.unlink(missing_ok=True)
    return exe


@dataclass
class Result:
    ok: bool
    rgb: Optional[np.ndarray] = None  # uint8 [H, W, 3]
    error: str = ""


def parse_ppm(data: bytes) -> np.ndarray:
    m = re.match(rb"P6\n(\d+) (\d+)\n255\n", data)
    assert m, data[:40]
    w, h = int(m.group(1)), int(m.group(2))
    body = data[m.end():]
    assert len(body) == w * h * 3
    return np.frombuffer(body, np.uint8).reshape(h, w, 3)


def read_ours(probe: Path, path: Path, out: Path, as_user: Optional[int] = None) -> Result:
    user = {} if as_user is None else {"user": as_user, "group": as_user, "extra_groups": []}
    p = subprocess.run([str(probe), str(path), str(out)], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                       **user)
    if p.returncode == 0:
        return Result(True, parse_ppm(out.read_bytes()))
    assert p.returncode == 1, f"probe exit {p.returncode} (not an InputError): {p.stderr}"
    assert p.stderr.startswith("InputError: "), p.stderr
    return Result(False, error=p.stderr.strip()[len("InputError: "):])


def read_pil(path: Path) -> Result:
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):  # PIL would block in open() waiting for a writer
            return Result(False, error="(not tried: open() of a FIFO blocks)")
        with Image.open(path) as im:
            return Result(True, np.asarray(im.convert("RGB")).copy())
    except Exception as e:  # noqa: BLE001 - PIL raises several types
        return Result(False, error=f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# Files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(width: int, height: int, depth: int, color_type: int, rows: list[bytes], extra: bytes = b"",
              interlaced_pixels: Optional[np.ndarray] = None) -> bytes:
    """A PNG by hand (filter 0 on every row): what PIL cannot write, such as 16-bit RGB or Adam7
    interlacing (`interlaced_pixels`: uint8 [H, W, C] at depth 8, in place of `rows`)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 1 if interlaced_pixels is not None else 0)
    if interlaced_pixels is not None:
        rows = [bytes(r) for x0, y0, dx, dy in ADAM7 for r in interlaced_pixels[y0::dy, x0::dx] if r.size]
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def pack_bits(values: np.ndarray, depth: int) -> list[bytes]:
    """Rows of `depth`-bit samples (1, 2, 4), most significant first, each row padded to a byte."""
    rows = []
    per = 8 // depth
    for row in values:
        padded = np.concatenate([row, np.zeros((-len(row)) % per, row.dtype)]).reshape(-1, per)
        shifts = np.array([8 - depth * (k + 1) for k in range(per)])
        rows.append((padded.astype(np.uint16) << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


RNG_SEED = 11
H, W = 23, 37  # odd sizes: chroma subsampling and row padding edges


def rgb8(seed: int = RNG_SEED, h: int = H, w: int = W) -> np.ndarray:
    """Noise over a smooth gradient: edges for the JPEG codec, every level used."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)], -1)
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def save(im: Image.Image, p: Path, fmt: str, **kw) -> None:
    im.save(p, fmt, **kw)


def mk_1x1(p):
    save(Image.fromarray(np.array([[[12, 200, 77]]], np.uint8)), p, "PNG")


def mk_rgb_png(p):
    save(Image.fromarray(rgb8()), p, "PNG")


def mk_gray_png(p):
    save(Image.fromarray(rgb8()[:, :, 0]), p, "PNG")


def mk_gray_low(depth):
    def mk(p):
        v = np.random.default_rng(depth).integers(0, 1 << depth, (H, W)).astype(np.uint8)
        p.write_bytes(png_bytes(W, H, depth, 0, pack_bits(v, depth)))
    return mk


def mk_gray_alpha(p):
    a = rgb8()
    save(Image.fromarray(np.stack([a[:, :, 0], a[:, :, 1]], -1), "LA"), p, "PNG")


def mk_rgba(p):
    a = rgb8()
    alpha = np.random.default_rng(1).integers(0, 256, (H, W, 1)).astype(np.uint8)
    alpha[0, :] = 0  # fully transparent pixels keep their colour in PIL's convert("RGB")
    save(Image.fromarray(np.concatenate([a, alpha], -1), "RGBA"), p, "PNG")


def palette_image(colors: int = 256) -> Image.Image:
    rng = np.random.default_rng(2)
    im = Image.fromarray(rng.integers(0, colors, (H, W)).astype(np.uint8), "P")
    im.putpalette(rng.integers(0, 256, colors * 3).astype(np.uint8).tobytes())
    return im


def mk_palette(p):
    save(palette_image(), p, "PNG")


def mk_palette_trns(p):
    im = palette_image()
    save(im, p, "PNG", transparency=bytes(np.random.default_rng(3).integers(0, 256, 256).astype(np.uint8)))


def mk_palette_4bit(p):
    save(palette_image(16), p, "PNG", bits=4)


def mk_rgb_trns(p):
    a = rgb8()
    a[3, 4] = (10, 20, 30)
    save(Image.fromarray(a), p, "PNG", transparency=(10, 20, 30))


def mk_rgba_interlaced(p):
    a = np.concatenate([rgb8(), np.random.default_rng(9).integers(0, 256, (H, W, 1)).astype(np.uint8)], -1)
    p.write_bytes(png_bytes(W, H, 8, 6, [], interlaced_pixels=a))


def mk_gray16(p):
    v = np.random.default_rng(4).integers(0, 65536, (H, W)).astype(np.uint16)
    v[0, :] = np.arange(W)  # small values too: PIL clips at 255, does not scale
    v[1, :W] = np.arange(W) * 7
    p.write_bytes(png_bytes(W, H, 16, 0, [r.astype(">u2").tobytes() for r in v]))


def mk_gray16_trns(p):
    v = np.random.default_rng(5).integers(0, 600, (H, W)).astype(np.uint16)
    p.write_bytes(png_bytes(W, H, 16, 0, [r.astype(">u2").tobytes() for r in v],
                            extra=png_chunk(b"tRNS", struct.pack(">H", int(v[2, 2])))))


def mk_rgb16(p):
    v = np.random.default_rng(6).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    p.write_bytes(png_bytes(W, H, 16, 2, [r.astype(">u2").tobytes() for r in v]))


def mk_rgba16(p):
    v = np.random.default_rng(7).integers(0, 65536, (H, W, 4)).astype(np.uint16)
    p.write_bytes(png_bytes(W, H, 16, 6, [r.astype(">u2").tobytes() for r in v]))


def mk_gray_alpha16(p):
    v = np.random.default_rng(8).integers(0, 65536, (H, W, 2)).astype(np.uint16)
    p.write_bytes(png_bytes(W, H, 16, 4, [r.astype(">u2").tobytes() for r in v]))


def mk_apng(default_image: bool):
    def mk(p):
        frames = [Image.fromarray(rgb8(s)) for s in (20, 21, 22)]
        if default_image:  # the IDAT image is not part of the animation; PIL's frame 0 is still the IDAT image
            save(frames[0], p, "PNG", save_all=True, append_images=frames[1:], default_image=True, duration=100)
        else:
            save(frames[0], p, "PNG", save_all=True, append_images=frames[1:], duration=100)
        assert b"acTL" in p.read_bytes()
    return mk


def mk_jpeg(mode: str = "RGB", **kw):
    def mk(p):
        a = rgb8()
        im = Image.fromarray(a) if mode == "RGB" else Image.fromarray(a).convert(mode)
        save(im, p, "JPEG", quality=kw.pop("quality", 90), **kw)
    return mk


def mk_jpeg_truncated(p):
    buf = io.BytesIO()
    Image.fromarray(rgb8()).save(buf, "JPEG", quality=90)
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


def mk_png_truncated(p):
    buf = io.BytesIO()
    Image.fromarray(rgb8()).save(buf, "PNG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


def mk_jpeg_exif_rotated(p):
    ex = Image.Exif()
    ex[0x0112] = 6  # Orientation: rotate 90 CW to display; Image.open does not apply it, nor do we
    save(Image.fromarray(rgb8()), p, "JPEG", quality=90, exif=ex)


def mk_format(fmt: str, **kw):
    def mk(p):
        save(Image.fromarray(rgb8()), p, fmt, **kw)
    return mk


def mk_png_huge(p):
    # 100000 x 100000 RGB declared in a ~100-byte file: refused from the header, before any allocation.
    p.write_bytes(png_bytes(100000, 100000, 8, 2, [b"\x00\x00\x00"]))


def mk_png_wide(p):
    p.write_bytes(png_bytes(16385, 1, 8, 0, [bytes(16385)]))


def mk_jpeg_huge(p):
    buf = io.BytesIO()
    Image.fromarray(rgb8(h=8, w=8)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    b[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    p.write_bytes(bytes(b))


def mk_empty(p):
    p.write_bytes(b"")


def mk_text(p):
    p.write_bytes(b"a prompt, not an image\n")


def mk_directory(p):
    p.mkdir()


def mk_fifo(p):
    os.mkfifo(p)


def mk_dangling_link(p):
    p.symlink_to(p.parent / "nowhere.png")


def mk_no_permission(p):
    mk_rgb_png(p)
    p.chmod(0)


@dataclass
class Case:
    name: str
    make: Callable[[Path], None]
    ours: str  # "match": equal to PIL's convert("RGB"); "error": an InputError matching `error`
    error: str = ""
    tolerance: int = 0
    suffix: str = ".img"
    as_nobody: bool = False


CASES = [
    Case("1x1", mk_1x1, "match"),
    Case("rgb8 png", mk_rgb_png, "match"),
    Case("gray8 png", mk_gray_png, "match"),
    Case("gray1 png", mk_gray_low(1), "match"),
    Case("gray2 png", mk_gray_low(2), "match"),
    Case("gray4 png", mk_gray_low(4), "match"),
    Case("gray+alpha png", mk_gray_alpha, "match"),
    Case("rgba png", mk_rgba, "match"),
    Case("rgb png + tRNS", mk_rgb_trns, "match"),
    Case("rgba png, Adam7 interlaced", mk_rgba_interlaced, "match"),
    Case("palette png", mk_palette, "match"),
    Case("palette png + tRNS", mk_palette_trns, "match"),
    Case("palette 4-bit png", mk_palette_4bit, "match"),
    Case("gray16 png", mk_gray16, "match"),
    Case("gray16 png + tRNS", mk_gray16_trns, "match"),
    Case("gray+alpha16 png", mk_gray_alpha16, "match"),
    Case("rgb16 png", mk_rgb16, "match"),
    Case("rgba16 png", mk_rgba16, "match"),
    Case("apng (IDAT = frame 0)", mk_apng(False), "match"),
    Case("apng (IDAT not animated)", mk_apng(True), "match"),
    Case("jpeg 4:2:0", mk_jpeg(subsampling=2), "match"),
    Case("jpeg 4:2:2", mk_jpeg(subsampling=1), "match"),
    Case("jpeg 4:4:4", mk_jpeg(subsampling=0), "match"),
    Case("gray jpeg", mk_jpeg("L"), "match"),
    Case("cmyk jpeg", mk_jpeg("CMYK"), "match"),
    Case("progressive jpeg", mk_jpeg(progressive=True), "match"),
    Case("jpeg + exif rotation", mk_jpeg_exif_rotated, "match"),
    Case("truncated jpeg", mk_jpeg_truncated, "error", r"truncated|premature end"),
    Case("truncated png", mk_png_truncated, "error", r"malformed PNG .*truncated"),
    Case("gif", mk_format("GIF"), "error", r"not a PNG or JPEG"),
    Case("bmp", mk_format("BMP"), "error", r"not a PNG or JPEG"),
    Case("webp", mk_format("WEBP"), "error", r"not a PNG or JPEG"),
    Case("tiff", mk_format("TIFF"), "error", r"not a PNG or JPEG"),
    Case("text file", mk_text, "error", r"not a PNG or JPEG"),
    Case("empty (0 bytes)", mk_empty, "error", r"is empty \(0 bytes\)"),
    Case("png 100000x100000", mk_png_huge, "error", r"is 100000x100000: at most 16384 pixels a side"),
    Case("png 16385x1", mk_png_wide, "error", r"is 16385x1: at most 16384 pixels a side"),
    Case("jpeg 60000x60000", mk_jpeg_huge, "error", r"is 60000x60000: at most 16384 pixels a side"),
    Case("directory", mk_directory, "error", r"is a directory"),
    Case("fifo", mk_fifo, "error", r"is not a regular file"),
    Case("dangling symlink", mk_dangling_link, "error", r"does not exist"),
    Case("no permission", mk_no_permission, "error", r"cannot read image .*Permission denied", as_nobody=True),
]


def run_case(case: Case, work: Path, probe: Path) -> dict:
    """Makes the file, reads it both ways; returns the figures (and asserts nothing)."""
    as_user, scratch = None, None
    if case.as_nobody and os.geteuid() == 0:
        # Root reads a mode-000 file, so the probe runs as nobody, from a directory nobody can enter
        # (pytest's tmp_path is under a root-only directory).
        as_user = 65534
        work = scratch = Path(tempfile.mkdtemp(prefix="glmi_cond_"))
        work.chmod(0o755)
        shutil.copy(probe, work / "probe")
        probe = work / "probe"
    try:
        path = work / ("in" + case.suffix)
        case.make(path)
        out = work / "out.ppm"
        pil = read_pil(path) if as_user is None else Result(False, error="PermissionError (as a non-root user)")
        ours = read_ours(probe, path, out, as_user)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    diff = None
    if pil.ok and ours.ok and pil.rgb.shape == ours.rgb.shape:
        diff = int(np.abs(pil.rgb.astype(np.int16) - ours.rgb.astype(np.int16)).max())
    return {"pil": pil, "ours": ours, "max_abs_diff": diff}


@pytest.fixture(scope="module")
def probe() -> Path:
    return build_probe()


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's advice, not a failure
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_condition_image(case: Case, probe: Path, tmp_path: Path):
    r = run_case(case, tmp_path, probe)
    pil, ours = r["pil"], r["ours"]
    if case.ours == "match":
        assert pil.ok, f"PIL refused the file: {pil.error}"
        assert ours.ok, f"we refused what PIL reads: {ours.error}"
        assert ours.rgb.shape == pil.rgb.shape
        assert r["max_abs_diff"] <= case.tolerance, f"max abs diff {r['max_abs_diff']} > {case.tolerance}"
    else:
        assert not ours.ok, "we accepted a file we must refuse"
        assert re.search(case.error, ours.error, re.I), ours.error
        assert "in" + case.suffix in ours.error, f"the error does not name the file: {ours.error}"


def main() -> None:
    exe = build_probe()
    print(f"{'case':28} {'PIL':48} {'ours':60} max_abs_diff")
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            r = run_case(case, Path(d), exe)
        def show(x: Result) -> str:
            return f"{x.rgb.shape[1]}x{x.rgb.shape[0]} RGB" if x.ok else x.error.replace(d, "<tmp>")[:58]
        print(f"{case.name:28} {show(r['pil'])[:48]:48} {show(r['ours']):60} {r['max_abs_diff']}")


if __name__ == "__main__":
    sys.exit(main())
