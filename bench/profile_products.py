"""The matrix products and attention calls of a torch.profiler run, by op and input shape, each
against the limits measured in the same run: which shapes lose rate, and so what a kernel or a
shape change could gain there (the DiT's few-row text products against its image ones, its
attention, the AR decode's one-row products against the memory's bandwidth). The profiler's own
table (by self time) says where the time goes; this one says how well each shape used it.

A row's FLOPs: 2 M K N for a product of [M, K] by [K, N] (addmm, mm, _addmm_activation, _scaled_mm;
bmm and baddbmm per batch; _weight_int8pack_mm and this library's CPU gemv, whose weight is
[N, K]); 4 B H Sq Sk D for an SDPA call (q [B, H, Sq, D], k [B, H, Sk, D]: Q K^T and P V; the
library's own CPU decode attention is not counted). Its bytes: the product's weight operand, read
once a call (`weight_bytes` per element: the profiler records shapes, not dtypes), none for
attention. Its time: a product's self time (the op's own kernels: device time on a GPU, CPU time
on a CPU); an attention op's total time, since on a GPU its kernel runs in a child op
(_flash_attention_forward) whose inputs are laid out otherwise. The math attention backend is left
out: its products are rows of their own.

Needs a profile taken with record_shapes=True: without shapes no op makes a row.
"""

from __future__ import annotations

# Products whose time is their own; the composite ops (linear, matmul) would count it twice.
_PRODUCTS = {"aten::addmm", "aten::mm", "aten::_addmm_activation", "aten::_scaled_mm", "aten::bmm",
             "aten::baddbmm", "aten::_weight_int8pack_mm", "glmimage::gemv"}
# The attention ops that take q, k, v as [B, H, S, D] and run one backend's kernel.
_ATTENTION = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention",
              "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_cudnn_attention"}


def stored_weight_bytes(quantize: str, itemsize: int) -> int:
    """A weight element's bytes as the products read it: the model dtype's `itemsize`, or one
    byte where the linears were quantized (int8 and fp8 alike)."""
    return itemsize if quantize == "none" else 1


def product_shape(op: str, shapes: list) -> tuple[int, int, int, int] | None:
    """(batches, M, K, N) of a product op's recorded input shapes, or None for another op (or
    shapes it cannot read)."""
    try:
        if op in ("aten::addmm", "aten::_addmm_activation"):  # bias, [M, K], [K, N]
            (m, k), (_, n) = shapes[1], shapes[2]
            return 1, m, k, n
        if op in ("aten::mm", "aten::_scaled_mm"):  # [M, K], [K, N]
            (m, k), (_, n) = shapes[0], shapes[1]
            return 1, m, k, n
        if op == "aten::bmm":  # [B, M, K], [B, K, N]
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return b, m, k, n
        if op == "aten::baddbmm":  # input, [B, M, K], [B, K, N]
            (b, m, k), (_, _, n) = shapes[1], shapes[2]
            return b, m, k, n
        if op in ("aten::_weight_int8pack_mm", "glmimage::gemv"):  # [M, K], weight [N, K], ...
            (m, k), (n, _) = shapes[0], shapes[1]
            return 1, m, k, n
    except (IndexError, TypeError, ValueError):
        return None
    return None


def attention_flops(shapes: list) -> int | None:
    """4 B H Sq Sk D of an attention op's q [B, H, Sq, D] and k [B, H, Sk, D], or None."""
    try:
        (b, h, sq, d), (_, _, sk, _) = shapes[0], shapes[1]
    except (IndexError, TypeError, ValueError):
        return None
    return 4 * b * h * sq * sk * d


def rows(averages, device_time: bool, weight_bytes: float) -> list[dict]:
    """One dict per (op, shapes) of key_averages(group_by_input_shape=True) that is a product or
    an attention call: op, kind ("product" or "attention"), shapes, calls, seconds, flops, bytes
    (totals over the calls). device_time: the ops' device (GPU) time, else their CPU time."""
    out = []
    for e in averages:
        if e.key in _PRODUCTS:
            shape = product_shape(e.key, e.input_shapes)
            if shape is None:
                continue
            b, m, k, n = shape
            kind, flops, nbytes = "product", 2 * b * m * k * n, b * k * n * weight_bytes
            us = e.self_device_time_total if device_time else e.self_cpu_time_total
        elif e.key in _ATTENTION:
            flops = attention_flops(e.input_shapes)
            if flops is None:
                continue
            kind, nbytes = "attention", 0
            us = e.device_time_total if device_time else e.cpu_time_total
        else:
            continue
        out.append({"op": e.key.removeprefix("aten::"), "kind": kind,
                    "shapes": [s for s in e.input_shapes if s], "calls": e.count,
                    "seconds": us / 1e6, "flops": flops * e.count, "bytes": nbytes * e.count})
    return sorted(out, key=lambda r: -r["seconds"])


def table(averages, device_time: bool, gemm_rate: float | None = None, bandwidth: float | None = None,
          weight_bytes: float = 2, limit: int = 30) -> str:
    """rows() as text, the largest time first: each row's TFLOP/s and, where `gemm_rate` (FLOP/s)
    is given, its share of it; where `bandwidth` (B/s) is given, the weight's GB/s and its share of
    it; then the totals of the products and of the attention calls."""
    rs = rows(averages, device_time, weight_bytes)
    head = f"{'op':34s} {'calls':>6s} {'s':>9s} {'TFLOP/s':>8s}"
    head += f" {'of GEMM':>7s}" if gemm_rate else ""
    head += f" {'GB/s':>7s} {'of bw':>6s}" if bandwidth else ""
    limits = ([f"GEMM rate {gemm_rate / 1e12:.3f} TFLOP/s"] if gemm_rate else []) + (
        [f"bandwidth {bandwidth / 1e9:.1f} GB/s"] if bandwidth else [])
    lines = ["== products and attention by shape" + (f": {', '.join(limits)} (measured in this run)" if limits else ""),
             head]

    def line(name, calls, s, flops, nbytes, shapes=""):
        rate = flops / s if s > 0 else 0.0
        text = f"{name[:34]:34s} {calls:6d} {s:9.4f} {rate / 1e12:8.3f}"
        if gemm_rate:
            text += f" {rate / gemm_rate:7.2f}"
        if bandwidth:
            bw = nbytes / s if s > 0 else 0.0
            text += f" {bw / 1e9:7.1f} {bw / bandwidth:6.2f}" if nbytes else f" {'':>7s} {'':>6s}"
        return text + (f"  {shapes}" if shapes else "")

    for r in rs[:limit]:
        lines.append(line(r["op"], r["calls"], r["seconds"], r["flops"], r["bytes"], r["shapes"]))
    if len(rs) > limit:
        lines.append(f"({len(rs) - limit} more shapes)")
    for what, kind in (("all products", "product"), ("all attention", "attention")):
        sel = [r for r in rs if r["kind"] == kind]
        if sel:
            lines.append(line(what, sum(r["calls"] for r in sel), sum(r["seconds"] for r in sel),
                              sum(r["flops"] for r in sel), sum(r["bytes"] for r in sel)))
    return "\n".join(lines) + "\n"
