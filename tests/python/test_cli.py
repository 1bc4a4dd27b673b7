"""The glmimage command-line tool, run as a subprocess on the embedded tiny checkpoint.

The binary is <build>/glmimage, where <build> is $GLMI_BUILD_DIR or <repo>/build.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("GLMI_BUILD_DIR", REPO / "build"))
BIN = BUILD / "glmimage"
TINY = REPO / "models" / "tiny"

if not (BIN.is_file() and os.access(BIN, os.X_OK)):
    pytest.skip(f"the glmimage tool is not built ({BIN} missing; build the glmimage_cli target)", allow_module_level=True)

Image = pytest.importorskip("PIL.Image")

# Small and quick: 64x64, 2 denoising steps, one thread (the test machine is shared).
FAST = ["--model", str(TINY), "--height", "64", "--width", "64", "--steps", "2", "--threads", "1"]


def run(*args, cwd: Path | None = None, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), *map(str, args)], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def condition_png(path: Path, size=(512, 512)) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def run_failing(workdir: Path, *args, code: int | None = None, says: str = "", cwd: Path | None = None):
    """Runs the tool expecting a clean failure: non-zero exit (`code` if given), exactly one
    'glmimage: ...' line on stderr naming `says`, nothing on stdout, no new file in `workdir`."""
    before = {p.name for p in workdir.iterdir()}
    res = run(*args, cwd=cwd)
    assert res.returncode != 0, res
    if code is not None:
        assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("glmimage: "), res.stderr
    assert says.lower() in lines[0].lower(), lines[0]
    assert res.stdout == ""
    new_files = sorted({p.name for p in workdir.iterdir()} - before)
    assert new_files == [], new_files


# ---- generation ------------------------------------------------------------------------------


def test_text_to_image_png_with_metadata(tmp_path):
    out = tmp_path / "cat.png"
    res = run("A poster that says \"Hello\"", *FAST, "--seed", "7", "-o", out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    assert res.stderr == ""  # not a terminal: no progress bar, no chatter
    with Image.open(out) as img:
        img.load()
        assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGB"
        text = dict(img.text)
    assert text["prompt"] == "A poster that says \"Hello\""
    settings = json.loads(text["glmimage"])
    assert settings["model"] == str(TINY)
    assert (settings["width"], settings["height"]) == (64, 64)
    assert settings["steps"] == 2 and settings["guidance"] == 1.5 and settings["seed"] == 7
    # the values the AR stage used: tiny's generation_config.json states none, so transformers' defaults
    assert settings["sampling"] == {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
    assert settings["version"] and text["Software"].startswith("glmimage ")
    assert [p.name for p in tmp_path.iterdir()] == ["cat.png"]  # no temporary file left
    # Every chunk's CRC is right (our text chunks included), and the text comes before the pixels.
    data = out.read_bytes()
    pos, types = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        types.append(kind.decode())
        pos += 12 + length
    assert types[0] == "IHDR" and types[-1] == "IEND"
    assert types.index("tEXt") < types.index("IDAT")


def test_generate_is_the_default_command_and_model_defaults_to_tiny(tmp_path):
    # From the repository root, models/tiny is the default model and out.png the default output.
    work = tmp_path / "w"
    work.mkdir()
    res = run("generate", "a red square", "--height", "64", "--width", "64", "--steps", "1", "--threads", "1",
              "-o", work / "x.png", cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert (work / "x.png").is_file()


def test_image_to_image(tmp_path):
    cond = condition_png(tmp_path / "cond.png")
    out = tmp_path / "edit.png"
    res = run("make it blue", "--image", cond, *FAST, "-o", out)
    assert res.returncode == 0, res.stderr
    with Image.open(out) as img:
        assert img.size == (64, 64)
        assert json.loads(img.text["glmimage"])["images"] == [str(cond)]


def test_prompt_file_writes_numbered_outputs(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\n   \nsecond prompt\r\n")
    res = run("--prompt-file", prompts, *FAST, "-o", tmp_path / "out.png")
    assert res.returncode == 0, res.stderr
    outs = [tmp_path / "out-0.png", tmp_path / "out-1.png"]
    assert res.stdout.split() == [str(p) for p in outs]
    assert not (tmp_path / "out.png").exists()
    for path, prompt in zip(outs, ["first prompt", "second prompt"]):
        with Image.open(path) as img:
            assert img.size == (64, 64) and img.text["prompt"] == prompt


def test_prompt_file_from_stdin(tmp_path):
    res = run("--prompt-file", "-", *FAST, "-o", tmp_path / "s.png", stdin="\nfrom stdin\n")
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "s.png") as img:
        assert img.text["prompt"] == "from stdin"


def test_same_seed_same_bytes_and_unicode_prompt(tmp_path):
    prompt = "海报上写着“你好”"  # not Latin-1: stored as iTXt
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        res = run(prompt, *FAST, "--seed", "123", "-o", out)
        assert res.returncode == 0, res.stderr
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as img:
        assert img.text["prompt"] == prompt


def test_no_cpu_block_cache_same_bytes(tmp_path):
    """128x128, where the tiny model has blocks the cache takes: the same PNG either way."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    size = ["--height", "128", "--width", "128"]
    for out, extra in ((a, []), (b, ["--no-cpu-block-cache"])):
        res = run("A sign that says \"Open\"", *FAST, *size, "--seed", "9", "-o", out, *extra)
        assert res.returncode == 0, res.stderr
    assert a.read_bytes() == b.read_bytes()


def test_cfg_passes_is_stored(tmp_path):
    out = tmp_path / "j.png"
    res = run("A sign that says \"Open\"", *FAST, "--cfg-passes", "joint", "-o", out)
    assert res.returncode == 0, res.stderr
    with Image.open(out) as img:
        assert json.loads(img.text["glmimage"])["cfg_passes"] == "joint"


def test_first_block_cache(tmp_path):
    """The threshold is stored with the image and the passes it served are printed; 0 is the
    exact path, byte for byte."""
    size = ["--height", "64", "--width", "96", "--steps", "12", "--seed", "3"]
    exact, cached, zero = tmp_path / "e.png", tmp_path / "c.png", tmp_path / "z.png"
    for out, extra in ((exact, []), (cached, ["--first-block-cache", "0.3"]), (zero, ["--first-block-cache", "0"])):
        res = run("A sign that says \"Open\"", *FAST, *size, "-o", out, *extra)
        assert res.returncode == 0, res.stderr
        served = [line for line in res.stderr.splitlines() if "first-block cache" in line]
        if extra and extra[1] != "0":
            assert len(served) == 1 and served[0].endswith(" of 24 DiT passes"), res.stderr
            assert int(served[0].split("served ")[1].split(" of")[0]) > 0, served
        else:
            assert served == [], res.stderr
    with Image.open(cached) as img:
        assert json.loads(img.text["glmimage"])["first_block_cache"] == 0.3
    assert exact.read_bytes() == zero.read_bytes()
    with Image.open(exact) as a, Image.open(cached) as b:
        assert a.tobytes() != b.tobytes()


def test_random_seed_is_printed_and_stored(tmp_path):
    out = tmp_path / "r.png"
    res = run("noise", *FAST, "--seed", "-1", "--greedy", "-o", out)
    assert res.returncode == 0, res.stderr
    seed = int(res.stderr.strip().rsplit(" ", 1)[1])
    with Image.open(out) as img:
        settings = json.loads(img.text["glmimage"])
    assert settings["seed"] == seed and settings["sampling"] == "greedy"


def test_existing_output_is_replaced_atomically_and_quiet(tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"old")
    res = run("x", *FAST, "--quiet", "-o", out)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_forced_progress_bar(tmp_path):
    res = run("x", *FAST, "--progress", "-o", tmp_path / "p.png")
    assert res.returncode == 0, res.stderr
    assert "ar" in res.stderr and "denoise" in res.stderr and "2/2 steps" in res.stderr


def test_ctrl_c_stops_cleanly(tmp_path):
    # Big enough to still be denoising when the signal arrives; stopped at the next step.
    out = tmp_path / "big.png"
    proc = subprocess.Popen([str(BIN), "x", "--model", str(TINY), "--height", "1024", "--width", "1024", "--steps",
                             "50", "--threads", "1", "--progress", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 60
    while b"denoise" not in seen and time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert b"denoise" in seen, seen
    assert proc.returncode == 130, (proc.returncode, rest)
    assert rest.strip().endswith(b"glmimage: interrupted")
    assert list(tmp_path.iterdir()) == []


# ---- bad input: non-zero exit, one line, no output ---------------------------------------


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["x", "--height", "100"], 2, "multiples of 32"),
        ([""], 2, "is empty"),
        (["x", "--device", "tpu"], 2, "device"),
        (["x", "--device", "cuda:x"], 2, "device"),
        (["x", "--dtype", "float8"], 2, "dtype"),
        (["x", "--steps", "-3"], 2, "steps must be >= 1"),
        (["x", "--steps", "two"], 2, "--steps"),
        (["x", "--frobnicate"], 2, "unknown option"),
        (["x", "--top-p", "1.5"], 2, "top_p"),
        (["x", "--guidance", "-1"], 2, "guidance"),
        (["x", "--seed", "-5"], 2, "--seed"),
        (["x", "--width"], 2, "needs a value"),
        (["x", "y"], 2, "quote the prompt"),
        (["x", "--quiet=yes"], 2, "takes no value"),
        (["x", "--cfg-passes", "both"], 2, "expected auto, joint or apart"),
        (["x", "--first-block-cache", "-0.1"], 2, "first_block_cache must be a finite threshold >= 0"),
        (["x", "--first-block-cache", "nan"], 2, "--first-block-cache: expected a number"),
    ],
)
def test_usage_errors(tmp_path, args, code, says):
    # Options first, so the last argument of each case stays last ("--width" with no value).
    run_failing(tmp_path, "--model", TINY, "-o", tmp_path / "out.png", *args, code=code, says=says)


def test_no_arguments_is_a_usage_error():
    res = run()
    assert res.returncode == 2 and "usage" in res.stderr


def test_output_must_be_png(tmp_path):
    run_failing(tmp_path, "x", *FAST, "-o", tmp_path / "out.jpg", code=2, says=".png")


def test_missing_model_directory(tmp_path):
    run_failing(tmp_path, "x", "--model", tmp_path / "nope", "-o", tmp_path / "out.png", code=1, says="does not exist")


def test_no_default_model_outside_the_repo(tmp_path):
    run_failing(tmp_path, "x", "-o", "out.png", cwd=tmp_path, code=2, says="--model")


def test_incomplete_model_directory(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    shutil.rmtree(model / "vae")
    run_failing(tmp_path, "x", "--model", model, "--height", "64", "--width", "64", "--steps", "1",
                "-o", tmp_path / "out.png", code=1, says="vae")


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "directory", "truncated"])
def test_bad_condition_image(tmp_path, kind):
    path = tmp_path / f"bad-{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "truncated":
        full = condition_png(tmp_path / "full.png").read_bytes()
        (tmp_path / "full.png").unlink()
        path.write_bytes(full[:200])
    run_failing(tmp_path, "x", "--image", path, *FAST, "-o", tmp_path / "out.png", code=1, says=str(path))


@pytest.mark.parametrize("kind", ["rgb", "gray", "truncated", "cmyk", "bomb"])
def test_jpeg_condition_images(tmp_path, kind):
    # JPEG goes through libjpeg-turbo (stb_image's JPEG decoder failed the fuzzer); grey and CMYK
    # convert (as PIL does: tests/python/test_condition_images.py), broken files are clear errors,
    # and a canvas too large is refused before decoding.
    import numpy as np

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    path = tmp_path / f"cond-{kind}.jpg"
    if kind == "gray":
        img = img.convert("L")
    if kind == "cmyk":
        img = img.convert("CMYK")
    img.save(path, quality=90)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    if kind == "bomb":  # a valid header declaring 65000x65000 pixels
        data = bytearray(path.read_bytes())
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = (65000).to_bytes(2, "big") * 2
        path.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    if kind in ("rgb", "gray", "cmyk"):
        res = run("x", "--image", path, *FAST, "--steps", "1", "-o", out)
        assert res.returncode == 0, res.stderr
        assert out.exists()
    else:
        says = {"truncated": "cannot decode image", "bomb": "65000x65000"}[kind]
        run_failing(tmp_path, "x", "--image", path, *FAST, "-o", out, code=1, says=says)


def test_output_directory_missing(tmp_path):
    run_failing(tmp_path, "x", *FAST, "-o", tmp_path / "no" / "out.png", code=1, says="does not exist")


def test_failure_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    res = run("x", "--image", tmp_path / "missing.png", *FAST, "-o", out)
    assert res.returncode == 1
    assert out.read_bytes() == b"precious"


def test_prompt_file_problems(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    run_failing(tmp_path, "--prompt-file", blank, *FAST, "-o", tmp_path / "o.png", code=1, says="no prompt")
    run_failing(tmp_path, "--prompt-file", tmp_path / "none.txt", *FAST, "-o", tmp_path / "o.png", code=1,
                says="none.txt")
    run_failing(tmp_path, "p", "--prompt-file", blank, *FAST, "-o", tmp_path / "o.png", code=2, says="not both")


# ---- help, version, info ----------------------------------------------------------------------


def test_help_mentions_every_option():
    res = run("--help")
    assert res.returncode == 0 and res.stderr == ""
    for opt in ["generate", "info", "--prompt-file", "--image", "--model", "--height", "--width", "--steps",
                "--guidance", "--seed", "--temperature", "--top-p", "--top-k", "--greedy", "--images-per-prompt",
                "--dtype", "--device", "--threads", "-o, --output", "--quiet", "--progress", "--help", "--version",
                "--residency", "--no-cpu-block-cache", "--first-block-cache", "GLM-Image", "[1024]", "[50]", "[1.5]", "generation_config.json", "[out.png]", "examples"]:
        assert opt in res.stdout, opt


def test_version():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("glmimage ")


def test_info(tmp_path):
    res = run("info", TINY, "--threads", "1")
    assert res.returncode == 0, res.stderr
    assert "transformer" in res.stdout and "vae" in res.stdout
    # tiny's generation_config.json states no sampling values: transformers' defaults, said so.
    assert "AR sampling defaults: temperature 1, top_p 1, top_k 50 (temperature: transformers default" in res.stdout
    staged = run("info", TINY, "--residency", "staged", "--dtype", "bfloat16")
    assert staged.returncode == 0 and "BF16 on cpu (staged)" in staged.stdout, staged.stdout
    run_failing(tmp_path, "info", TINY, "--residency", "sometimes", code=2, says="residency")
    run_failing(tmp_path, "info", code=2, says="MODEL_DIR")
    run_failing(tmp_path, "info", tmp_path / "nope", code=1, says="does not exist")


# ---- requests that cannot fit, and file-size limits: a clear error in seconds, nothing left --


@pytest.mark.parametrize("args, says", [
    (["--height", "16384", "--width", "16384"], "more than the AR model's 4096-token context"),
    (["--height", "1024", "--width", "1024", "--images-per-prompt", "1024"], "is available on this machine"),
])
def test_requests_that_cannot_fit_fail_at_once(tmp_path, args, says):
    t0 = time.monotonic()
    run_failing(tmp_path, "x", "--model", TINY, *args, "-o", tmp_path / "out.png", code=1, says=says)
    assert time.monotonic() - t0 < 20


def test_a_prompt_longer_than_the_context_fails_at_once(tmp_path):
    prompts = tmp_path / "long.txt"
    prompts.write_text("a " * 100_000 + "\n")
    before = {p.name for p in tmp_path.iterdir()}
    t0 = time.monotonic()
    res = run("--model", TINY, "--height", "64", "--width", "64", "--prompt-file", prompts, "-o", tmp_path / "o.png")
    assert res.returncode == 1 and "exceeds the AR model's context" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 20
    assert {p.name for p in tmp_path.iterdir()} == before


def test_file_size_limit_is_an_error_not_a_signal(tmp_path):
    # Under `ulimit -f` a write past the limit raises SIGXFSZ, which would kill the tool and
    # leave its temporary file; it must fail cleanly instead.
    cmd = " ".join(f"'{a}'" for a in [BIN, "x", *FAST, "--steps", "1", "-o", tmp_path / "x.png"])
    res = subprocess.run(["bash", "-c", f"ulimit -f 4; exec {cmd}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "File too large" in res.stderr
    assert list(tmp_path.iterdir()) == []  # neither the image nor a temporary file
