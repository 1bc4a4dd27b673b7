"""bench/profile_products.py: the benches' table of products and attention calls by shape (their
--profile; on a GPU, tools/gpu_bench.sh's dit_profile.txt and ar_profile.txt). Checked on a real
profile of products and attention calls of known shapes: each row's FLOPs, weight bytes and calls,
the ops that must not count twice left out, and the table's totals."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import profile_products  # noqa: E402


def _averages(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return prof.key_averages(group_by_input_shape=True)


def _work():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(6, 16, generator=g), torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
    for _ in range(3):
        F.linear(x, w, b)  # addmm [24], [6, 16], [16, 24]
    x @ w.t()  # mm [6, 16], [16, 24]
    torch.bmm(torch.randn(2, 5, 16, generator=g), torch.randn(2, 16, 7, generator=g))
    q = torch.randn(1, 4, 9, 8, generator=g)
    k, v = torch.randn(1, 4, 11, 8, generator=g), torch.randn(1, 4, 11, 8, generator=g)
    F.scaled_dot_product_attention(q, k, v)  # CPU: _scaled_dot_product_flash_attention_for_cpu


def test_rows_count_each_shape_once_with_its_flops_and_weight_bytes():
    rows = {(r["op"], str(r["shapes"])): r for r in profile_products.rows(_averages(_work), False, 4)}
    addmm = rows[("addmm", str([[24], [6, 16], [16, 24]]))]
    assert (addmm["kind"], addmm["calls"], addmm["flops"], addmm["bytes"]) == ("product", 3, 3 * 2 * 6 * 16 * 24,
                                                                               3 * 16 * 24 * 4)
    mm = rows[("mm", str([[6, 16], [16, 24]]))]
    assert (mm["calls"], mm["flops"], mm["bytes"]) == (1, 2 * 6 * 16 * 24, 16 * 24 * 4)
    bmm = rows[("bmm", str([[2, 5, 16], [2, 16, 7]]))]
    assert (bmm["flops"], bmm["bytes"]) == (2 * 2 * 5 * 16 * 7, 2 * 16 * 7 * 4)
    attention = [r for r in rows.values() if r["kind"] == "attention"]
    assert len(attention) == 1 and attention[0]["flops"] == 4 * 1 * 4 * 9 * 11 * 8 and attention[0]["bytes"] == 0
    # linear and matmul are composites of the rows above: counting them too would count twice
    assert not [r for r in rows.values() if r["op"] in ("linear", "matmul", "scaled_dot_product_attention")]
    assert all(r["seconds"] > 0 for r in rows.values())
    assert [r["seconds"] for r in rows.values()] == sorted((r["seconds"] for r in rows.values()), reverse=True)


def test_table_totals_and_shares():
    averages = _averages(_work)
    rows = profile_products.rows(averages, False, 4)
    # limits this small make every share a large number that the table prints to 2 decimals
    lines = profile_products.table(averages, False, gemm_rate=1e6, bandwidth=1e6, weight_bytes=4).splitlines()
    assert "GEMM rate 0.000 TFLOP/s, bandwidth 0.0 GB/s" in lines[0]
    products = [r for r in rows if r["kind"] == "product"]
    seconds, flops, nbytes = (sum(r[k] for r in products) for k in ("seconds", "flops", "bytes"))
    total = next(line for line in lines if line.startswith("all products")).split()
    assert int(total[2]) == sum(r["calls"] for r in products) == 5
    assert abs(float(total[5]) - flops / seconds / 1e6) <= 0.0051  # of GEMM, printed to 2 decimals
    assert abs(float(total[7]) - nbytes / seconds / 1e6) <= 0.0051  # of bw
    attention = next(line for line in lines if line.startswith("all attention")).split()
    assert int(attention[2]) == 1 and len(attention) == 6  # no bytes, so no bandwidth columns
    # without limits, no share columns
    bare = profile_products.table(averages, False).splitlines()
    assert "of GEMM" not in bare[1] and "GB/s" not in bare[1]


def test_shapes_it_cannot_read_are_not_rows():
    assert profile_products.product_shape("aten::addmm", [[24], [6, 16]]) is None
    assert profile_products.product_shape("aten::add", [[6, 16], [6, 16]]) is None
    assert profile_products.product_shape("glmimage::gemv", [[1, 16], [24, 16]]) == (1, 1, 16, 24)
    assert profile_products.attention_flops([[1, 4, 9]]) is None


def test_device_time_on_a_gpu():
    # What a CUDA profile's averages hold (no GPU here): a product's kernels are its self device
    # time; an attention op's kernel runs in a child op, so only its total device time holds it.
    from types import SimpleNamespace as Event

    events = [
        Event(key="aten::mm", input_shapes=[[1, 4096], [4096, 16384]], count=2, self_cpu_time_total=30.0,
              cpu_time_total=30.0, self_device_time_total=4000.0, device_time_total=4000.0),
        Event(key="aten::_scaled_dot_product_flash_attention", input_shapes=[[1, 32, 4106, 128]] * 3 + [[], []],
              count=1, self_cpu_time_total=20.0, cpu_time_total=25.0, self_device_time_total=0.0,
              device_time_total=9000.0),
        Event(key="aten::_flash_attention_forward", input_shapes=[[1, 4106, 32, 128]] * 3, count=1,
              self_cpu_time_total=5.0, cpu_time_total=5.0, self_device_time_total=9000.0, device_time_total=9000.0),
    ]
    got = {r["op"]: r for r in profile_products.rows(events, True, 2)}
    assert set(got) == {"mm", "_scaled_dot_product_flash_attention"}  # the child op's kernel counted once
    assert got["mm"]["seconds"] == 4000e-6 and got["mm"]["bytes"] == 2 * 4096 * 16384 * 2
    attention = got["_scaled_dot_product_flash_attention"]
    assert attention["seconds"] == 9000e-6 and attention["flops"] == 4 * 32 * 4106 * 4106 * 128
    on_cpu = {r["op"]: r["seconds"] for r in profile_products.rows(events, False, 2)}
    assert on_cpu == {"mm": 30e-6, "_scaled_dot_product_flash_attention": 25e-6}


def test_stored_weight_bytes():
    """A weight element as the benches' profiles read it: the dtype's size, one byte quantized."""
    assert profile_products.stored_weight_bytes("none", torch.bfloat16.itemsize) == 2
    assert profile_products.stored_weight_bytes("none", torch.float32.itemsize) == 4
    assert profile_products.stored_weight_bytes("int8", torch.bfloat16.itemsize) == 1
    assert profile_products.stored_weight_bytes("fp8", torch.float32.itemsize) == 1
