"""benchmarks/attention_kernels.py: every kernel is checked against float64 attention before it is timed."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import attention_kernels as bench


def test_packed_sdpa_is_grouped_query_attention():
    torch.manual_seed(1)
    q = torch.randn(1, bench.Q_HEADS, 1, bench.HEAD_DIM)
    k, v = (torch.randn(1, bench.KV_HEADS, 40, bench.HEAD_DIM) for _ in range(2))
    assert torch.allclose(bench.sdpa(q, k, v).double(), bench.reference(q, k, v), atol=1e-5)
    # query head h reads KV head h // 3: moving one KV head's values changes exactly its three query heads
    moved = bench.sdpa(q, k, v.index_fill(1, torch.tensor([2]), 0.0))
    changed = (moved - bench.sdpa(q, k, v)).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [False] * 6 + [True] * 3


@pytest.fixture(autouse=True)
def keep_threads():
    """main() sets torch's thread count for the process: give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_report_has_a_row_per_kernel_and_dtype(tmp_path):
    output = tmp_path / "kernels.json"
    report = bench.main(["--positions", "64", "--layers", "2", "--repeats", "1", "--kernels", "sdpa",
                         "--dtypes", "float32,bfloat16", "--output", str(output)])
    assert json.loads(output.read_text()) == report
    assert [(r["kernel"], r["dtype"]) for r in report["rows"]] == [("sdpa", "float32"), ("sdpa", "bfloat16")]
    assert report["rows"][0]["max_abs_error_vs_float64"] < 1e-5 and report["rows"][1]["max_abs_error_vs_float64"] < 0.05
    assert all(r["ms_per_layer"] > 0 and r["cache_gb_per_second"] > 0 for r in report["rows"])


@pytest.mark.parametrize("args", [["--dtypes", "int4"], ["--kernels", "cuda"], ["--positions", "0"]])
def test_bad_arguments_are_refused(args, tmp_path):
    with pytest.raises(SystemExit) as raised:
        bench.main([*args, "--output", str(tmp_path / "x.json")])
    assert raised.value.code == 2
