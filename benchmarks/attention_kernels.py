"""One decode step's attention over a long KV cache, per kernel: how fast each reads the cache.

The shape is SmolLM2-135M's (9 query heads over 3 KV heads of 64) with one new token over `--positions`
cached positions; the caches of `--layers` different layers are cycled, so each call reads its keys and values
from memory rather than from the CPU's caches, as a decode step through 30 layers does. Kernels:

- `sdpa`: torch's `scaled_dot_product_attention` (the exact path's kernel), the query packed per KV head as
  transformers does for one new token (3 KV heads x 3 query rows);
- `flex`: FlexAttention (`torch.nn.attention.flex_attention`) compiled by `torch.compile` (inductor's CPU code
  generation; eager FlexAttention is a reference implementation), with grouped-query attention (`enable_gqa`)
  and no mask (one new row attends to every cached position).

Each is checked against float64 attention before it is timed. Reports the median milliseconds per layer over
`--repeats` passes through all layers and the cache bytes read per second.

    python benchmarks/attention_kernels.py --threads 1 --dtypes float32,bfloat16

Writes benchmarks/results/attention_kernels.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.host import host_info  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (1, 9, 1, 64) packed to (1, 3, 3, 64): each KV head's three query heads as three query rows."""
    groups = Q_HEADS // KV_HEADS
    packed = q.view(1, KV_HEADS, groups, HEAD_DIM)
    return F.scaled_dot_product_attention(packed, k, v).reshape(1, Q_HEADS, 1, HEAD_DIM)


def make_flex():
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, enable_gqa=True)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = k.double().repeat_interleave(Q_HEADS // KV_HEADS, dim=1)
    v = v.double().repeat_interleave(Q_HEADS // KV_HEADS, dim=1)
    weights = torch.softmax(q.double() @ k.transpose(-1, -2) / HEAD_DIM**0.5, dim=-1)
    return weights @ v


def measure(kernel, caches, q, repeats: int) -> float:
    """Median ms per layer over `repeats` passes through every layer's cache (after one warm pass)."""
    for k, v in caches:  # warm every layer's shapes (one graph for all: same shapes)
        kernel(q, k, v)
    per_layer = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k, v in caches:
            kernel(q, k, v)
        per_layer.append((time.perf_counter() - t0) / len(caches) * 1000)
    return statistics.median(per_layer)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=4200)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated among {list(DTYPES)}")
    parser.add_argument("--kernels", default="sdpa,flex", help="comma-separated among sdpa, flex")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "attention_kernels.json")
    args = parser.parse_args(argv)
    dtypes, kernels = args.dtypes.split(","), args.kernels.split(",")
    if set(dtypes) - set(DTYPES):
        parser.error(f"--dtypes: unknown {sorted(set(dtypes) - set(DTYPES))}; choose from {list(DTYPES)}")
    if set(kernels) - {"sdpa", "flex"}:
        parser.error(f"--kernels: unknown {sorted(set(kernels) - {'sdpa', 'flex'})}; choose from sdpa, flex")
    for name in ("positions", "layers", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        caches = [(torch.randn(1, KV_HEADS, args.positions, HEAD_DIM).to(dtype),
                   torch.randn(1, KV_HEADS, args.positions, HEAD_DIM).to(dtype)) for _ in range(args.layers)]
        q = torch.randn(1, Q_HEADS, 1, HEAD_DIM).to(dtype)
        cache_bytes = 2 * KV_HEADS * args.positions * HEAD_DIM * caches[0][0].element_size()
        expected = reference(q, *caches[0])
        for kernel_name in kernels:
            kernel = sdpa if kernel_name == "sdpa" else make_flex()
            t0 = time.perf_counter()
            out = kernel(q, *caches[0])  # the first call compiles (flex)
            first = time.perf_counter() - t0
            error = float((out.double() - expected).abs().max())
            ms = measure(kernel, caches, q, args.repeats)
            row = {"kernel": kernel_name, "dtype": dtype_name, "ms_per_layer": ms,
                   "cache_gb_per_second": cache_bytes / (ms / 1000) / 1e9, "first_call_seconds": first,
                   "max_abs_error_vs_float64": error}
            rows.append(row)
            print(f"{kernel_name:5s} {dtype_name:9s} {ms:7.3f} ms/layer  {row['cache_gb_per_second']:5.1f} GB/s  "
                  f"first call {first:6.2f} s  max error {error:.1e}", flush=True)
    report = {"setup": {"host": host_info(), "positions": args.positions, "layers": args.layers,
                        "repeats": args.repeats, "q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM},
              "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
