"""Cost of a training step with and without `loss.sequence_chunk_size`, or in float32 and bf16 autocast,
on a recipe's own batches.

The recipe's trainer is built as `grit train` builds it (model, LoRA, data, collator, precision: bf16
autocast only where the CPU multiplies bfloat16 natively); its first `--steps` batches are collated once,
then every batch runs a full training step (forward and backward of every loss, in the autocast training
uses, no optimizer update) once padded as one batch (the baseline) and once for each chunk size,
interleaved batch by batch so a machine that slows down over the run slows every setting alike. It
reports per setting the mean wall and process-CPU seconds of a step, the ratio to the baseline and the
largest difference of the step's losses from the baseline's (the loss must not change).

    python benchmarks/training_step.py recipes/grit-smollm2-135m.yaml --steps 8 --chunk-size 1 --chunk-size 2
    python benchmarks/training_step.py recipes/grit-smollm2-135m-rerank.yaml --set lora.init_adapter=null \\
        --set lora.init_adapter_weight=null
    python benchmarks/training_step.py recipes/grit-smollm2-135m-v5.yaml --precisions float32,bf16 \\
        --set lora.init_adapter=grit_components/adapters/grit-smollm2-135m

With `--precisions`, the settings are the precisions instead (at the recipe's own `sequence_chunk_size`; the
first one is the baseline): float32 runs the step without autocast, bf16 inside
`torch.autocast("cpu", torch.bfloat16)`, whatever the CPU (so a CPU without native bfloat16 shows its cost).

Writes benchmarks/results/training_step_<recipe>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.host import cpu_flags, cpu_name  # noqa: E402
from grit_components.training.config import load_config, parse_overrides  # noqa: E402
from grit_components.training.run import build_trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--steps", type=int, default=8, help="batches measured (each once per setting)")
    parser.add_argument("--chunk-size", type=int, action="append", dest="chunk_sizes",
                        help="sequence_chunk_size settings to compare with the padded batch (default: 1 and 2)")
    parser.add_argument("--precisions", default=None, metavar="P1,P2",
                        help="compare these precisions (float32, bf16) instead of chunk sizes; the first is the "
                             "baseline")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe setting, as `grit train --set` does (VALUE is YAML)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    sizes = args.chunk_sizes or [1, 2]
    if any(size < 1 for size in sizes):
        parser.error("--chunk-size must be >= 1")
    precisions = args.precisions.split(",") if args.precisions else None
    if precisions is not None and (not precisions or set(precisions) - {"float32", "bf16"}
                                   or len(set(precisions)) != len(precisions)):
        parser.error(f"--precisions must list distinct values among float32 and bf16, got {args.precisions!r}")
    if precisions is not None and args.chunk_sizes:
        parser.error("--precisions and --chunk-size compare different things: give one of them")
    try:
        overrides = parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))
    recipe = args.recipe.resolve()
    config = load_config(recipe, overrides={**overrides, "eval.beir": None,
                                            "output_dir": str(Path("/tmp") / f"training-step-{os.getpid()}")})
    trainer = build_trainer(config)
    loader = trainer.get_train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.steps:
            break
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which is not run here
    recipe_chunk = trainer.sequence_chunk_size
    if precisions is None:
        settings = [(None, None), *((size, None) for size in sizes)]
        label = {s: "padded" if s[0] is None else f"chunks_of_{s[0]}" for s in settings}
    else:
        settings = [(recipe_chunk, p) for p in precisions]
        label = {s: s[1] for s in settings}
    results = {label[s]: {"wall": [], "cpu": [], "losses": []} for s in settings}

    def autocast(precision: str | None):
        if precision is None:  # what `train()` wraps the model in (bf16 autocast if it uses it)
            return trainer.accelerator.autocast()
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    for index, batch in enumerate(batches):
        for size, precision in settings:
            trainer.sequence_chunk_size = size
            trainer._parts = {k: [] for k in trainer._parts}
            wall, cpu = time.perf_counter(), time.process_time()
            with autocast(precision):
                trainer.training_step(model, batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            model.zero_grad(set_to_none=True)
            row = results[label[(size, precision)]]
            row["wall"].append(wall)
            row["cpu"].append(cpu)
            row["losses"].append({k: v[0] for k, v in trainer._parts.items() if v and k.startswith("loss")})
            print(f"batch {index + 1}/{len(batches)} {label[(size, precision)]}: {wall:.1f} s wall, {cpu:.1f} CPU-s",
                  flush=True)
    def measured_total(row: dict, key: str) -> float:
        return sum(row[key][1:] or row[key])  # batch 1 warms up (unless it is the only one)

    base = results[label[settings[0]]]
    base_wall, base_cpu = measured_total(base, "wall"), measured_total(base, "cpu")
    baseline = "padded" if precisions is None else precisions[0]
    summary = {}
    for setting in settings:
        row = results[label[setting]]
        wall, cpu = measured_total(row, "wall"), measured_total(row, "cpu")
        difference = max(abs(a[k] - b[k]) for a, b in zip(row["losses"], base["losses"]) for k in a)
        measured = max(len(batches) - 1, 1)
        summary[label[setting]] = {"sequence_chunk_size": setting[0], "step_wall_seconds": wall / measured,
                                   "step_cpu_seconds": cpu / measured, f"wall_ratio_to_{baseline}": wall / base_wall,
                                   f"cpu_ratio_to_{baseline}": cpu / base_cpu, "max_loss_difference": difference}
        if precisions is not None:
            summary[label[setting]]["precision"] = setting[1]
    print(f"\n{'setting':>20} {'s/step':>8} {'CPU-s/step':>11} {'x ' + baseline:>9} {'max |dloss|':>12}")
    for name, row in summary.items():
        shown = "null (padded)" if name == "padded" else name
        print(f"{shown:>20} {row['step_wall_seconds']:8.2f} {row['step_cpu_seconds']:11.2f} "
              f"{row[f'wall_ratio_to_{baseline}']:9.3f} {row['max_loss_difference']:12.2e}")
    suffix = "" if precisions is None else "_precision"
    output = args.output or ROOT / "benchmarks" / "results" / f"training_step_{recipe.stem}{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"bf16_autocast": bool(trainer.args.bf16), "recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe),
                                  "overrides": overrides, "steps": len(batches), "threads": torch.get_num_threads(),
                                  "cpu": cpu_name(), "cpu_flags": cpu_flags(), "summary": summary,
                                  "per_batch": results}, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
