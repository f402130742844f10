"""Embedding throughput of `GritModel.embed` against the raw forward pass and the reference's input-order batching.

All three run in the same process on the same texts, interleaved chunk by chunk (rotating which goes
first) so background load affects them alike:
- grit: `GritModel.embed` (tokenise, length-sorted batches, bidirectional forward, pooling, restore order);
- raw forward: only the bidirectional forward of the same length-sorted, pre-tokenised batches: the limit;
- input order: the same embedding code fed batches in input order, as ContextualAI/gritlm's `encode` does.

    python benchmarks/embed_throughput.py [--model smollm2-135m-instruct] [--n 1000] [--batch-size 32]

Prints a table and writes benchmarks/results/embed_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from grit_components import load_model
from grit_components.attention import bidirectional_forward
from grit_components.embedding import build_inputs, length_sorted_batches, pad_batch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "wikidesc" / "corpus.jsonl"


def load_passages(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(n), handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--n", type=int, default=1000, help="passages (the first n of the corpus)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8, help="interleaving chunks")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "embed_throughput.json")
    args = parser.parse_args()

    model = load_model(args.model)
    texts = load_passages(args.corpus, args.n)
    size = -(-len(texts) // args.chunks)
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    model.embed(texts[:8], batch_size=8, max_length=args.max_length)  # warm-up (allocator, kernels)

    def grit(chunk):
        model.embed(chunk, batch_size=args.batch_size, max_length=args.max_length)

    def input_order(chunk):
        for start in range(0, len(chunk), args.batch_size):
            model.embed(chunk[start : start + args.batch_size], batch_size=args.batch_size, max_length=args.max_length)

    def raw_forward(chunk):
        inputs = build_inputs(model, chunk, instruction="", max_length=args.max_length)
        batches = [pad_batch([inputs[i].ids for i in batch], model.pad_token_id, model.device)
                   for batch in length_sorted_batches([len(x.ids) for x in inputs], args.batch_size)]
        start = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in batches:
                bidirectional_forward(model.model, ids, mask)
        return time.perf_counter() - start  # only the forward passes count

    methods = {"grit": grit, "raw_forward": raw_forward, "input_order": input_order}
    seconds = dict.fromkeys(methods, 0.0)
    per_chunk: list[dict[str, float]] = []
    for c, chunk in enumerate(chunks):
        names = list(methods)
        times = {}
        for name in names[c % 3 :] + names[: c % 3]:
            start = time.perf_counter()
            measured = methods[name](chunk)
            times[name] = measured if measured is not None else time.perf_counter() - start
            seconds[name] += times[name]
        per_chunk.append({k: round(v, 3) for k, v in times.items()})
        print(f"chunk {c + 1}/{len(chunks)}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()), flush=True)

    tokens = sum(len(x.ids) for x in build_inputs(model, texts, instruction="", max_length=args.max_length))
    rows = {name: {"seconds": round(s, 3), "texts_per_s": round(len(texts) / s, 2), "tokens_per_s": round(tokens / s, 1)}
            for name, s in seconds.items()}
    # Totals, and the median of per-chunk ratios: each chunk's three methods run back to back, so a burst
    # of load from other processes skews one chunk, not the median.
    ratios = {"grit_vs_raw_forward": round(seconds["raw_forward"] / seconds["grit"], 3),
              "grit_vs_input_order": round(seconds["input_order"] / seconds["grit"], 3),
              "median_chunk_grit_vs_raw_forward": round(statistics.median(c["raw_forward"] / c["grit"] for c in per_chunk), 3),
              "median_chunk_grit_vs_input_order": round(statistics.median(c["input_order"] / c["grit"] for c in per_chunk), 3)}
    result = {"model": args.model, "n_texts": len(texts), "tokens": tokens, "batch_size": args.batch_size,
              "max_length": args.max_length, "dtype": str(model.dtype), "threads": torch.get_num_threads(),
              "machine": platform.machine(), "results": rows, "ratios": ratios, "per_chunk_seconds": per_chunk,
              "goals": {"grit_vs_raw_forward": ">= 0.9", "grit_vs_input_order": ">= 1.3"}}
    print(f"\n{'method':<12} {'seconds':>8} {'texts/s':>8} {'tokens/s':>9}")
    for name, row in rows.items():
        print(f"{name:<12} {row['seconds']:>8.1f} {row['texts_per_s']:>8.1f} {row['tokens_per_s']:>9.0f}")
    print(f"\ngrit / raw forward speed: {ratios['grit_vs_raw_forward']:.3f}x total, "
          f"{ratios['median_chunk_grit_vs_raw_forward']:.3f}x median per chunk (goal >= 0.9)")
    print(f"grit / input-order speed: {ratios['grit_vs_input_order']:.3f}x total, "
          f"{ratios['median_chunk_grit_vs_input_order']:.3f}x median per chunk (goal >= 1.3)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
