"""Can llama.cpp serve the GRIT modes with the same outputs? (issue 28, `[llama-cpp]` extra)

    python benchmarks/llama_cpp_grit.py                                  # grit-smollm2-135m, 20 dev queries
    python benchmarks/llama_cpp_grit.py --model smollm2-135m-instruct --dtypes f32,f16,q8_0 --queries 50

The model (adapter merged, as the torch path loads it) is written as GGUF files (`grit_components.export`,
one per `--dtypes`), and llama.cpp's outputs are compared with the torch path's, on WikiDesc dev queries and
their gold passages:
- generation: greedy RAG answers (doc-first prompt, uncached) token for token;
- embedding: llama.cpp with the causal mask off (`llama_set_causal_attn`) and per-token outputs
  (pooling NONE), pooled by us over the text tokens as GRIT does, against `GritModel.embed` (cosine);
- doc caching from a stored state: the document evaluated once, its state saved and restored per answer;
- embedding-source doc caching inside llama.cpp: the document run bidirectionally (as when it was
  embedded), then the causal mask back on and the question and answer decoded over those states, against
  `rag.answer(mode="doc", source="embedding")`.
Writes benchmarks/results/llama_cpp_grit.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402

from grit_components import load_model, rag  # noqa: E402
from grit_components.embedding import build_inputs  # noqa: E402
from grit_components.evaluation.data import load_beir  # noqa: E402
from grit_components.export import GGUF_DTYPES, export_gguf  # noqa: E402
from grit_components.kv_cache import KVStore  # noqa: E402
from grit_components.llama_engine import import_llama_cpp, last_logits, load_sequence, save_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikidesc"


def _llama(path: Path, n_ctx: int, threads: int, *, embedding: bool = False):
    llama_cpp = import_llama_cpp()
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                           n_threads_batch=threads, embedding=embedding, logits_all=embedding,
                           pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE if embedding else -1, verbose=False)


def _greedy(llm, ids: list[int], new_tokens: int, eos: set[int]) -> list[int]:
    out: list[int] = []
    llm.eval(list(ids))
    for _ in range(new_tokens):
        token = int(last_logits(llm).argmax())
        out.append(token)
        if token in eos:
            break
        llm.eval([token])
    return out


def _per_token(llm, ids: list[int]) -> np.ndarray:
    """Final hidden states (after the output norm) of `ids`, from a fresh sequence."""
    import llama_cpp

    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    llm.eval(list(ids))
    width = llama_cpp.llama_model_n_embd(llm.model)
    return np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(llm.ctx, i), shape=(width,)).copy()
                     for i in range(len(ids))])


def load_wikidesc(count: int) -> list[tuple[str, str]]:
    """(query, gold passage) of the first `count` dev queries over corpus-2k."""
    data = load_beir(DATA, split="dev", corpus_file="corpus-2k.jsonl")
    pairs = []
    for qid, query in list(data.queries.items())[:count]:
        gold = max(data.qrels[qid], key=data.qrels[qid].get)
        pairs.append((query, data.document_text(gold)))
    return pairs


def compare(spec: str, dtypes: list[str], queries: int, threads: int, new_tokens: int, output: Path) -> dict:
    import llama_cpp

    torch.set_num_threads(threads)
    model = load_model(spec)
    stop = model.model.generation_config.eos_token_id
    eos = {model.tokenizer.eos_token_id, *(stop if isinstance(stop, list) else [stop])} - {None}
    pairs = load_wikidesc(queries)
    store = KVStore(max_bytes=2 * 1024**3)
    reference = []
    for query, passage in pairs:
        gen = rag.answer(model, query, [passage], mode="none", max_new_tokens=new_tokens)
        emb_source = rag.answer(model, query, [passage], mode="doc", source="embedding", max_new_tokens=new_tokens,
                                store=store)
        reference.append({"uncached_text": gen.text, "embedding_source_text": emb_source.text})
    instruction = model.metadata.query_instruction or ""
    texts = [q for q, _ in pairs] + [p for _, p in pairs]
    instructions = [instruction] * len(pairs) + [""] * len(pairs)
    ours = np.concatenate([model.embed([q for q, _ in pairs], instruction=instruction),
                           model.embed([p for _, p in pairs], instruction="")])
    report: dict = {"model": spec, "queries": len(pairs), "new_tokens": new_tokens, "threads": threads,
                    "query_instruction": instruction, "dtypes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            t0 = time.perf_counter()
            path = export_gguf(model, Path(tmp) / f"model.{dtype}.gguf", dtype=dtype)
            entry: dict = {"export_seconds": time.perf_counter() - t0, "gguf_bytes": path.stat().st_size}
            gen_llm = _llama(path, 2048, threads)
            same_text = same_state = same_emb_source = 0
            for (query, passage), ref in zip(pairs, reference):
                ids = rag.build_prompt(model, query, [passage], "none").prompt_ids()
                gen_llm.reset()
                text = model.tokenizer.decode(_greedy(gen_llm, ids, new_tokens, eos), skip_special_tokens=True)
                same_text += text.strip() == ref["uncached_text"].strip()
                prompt = rag.build_prompt(model, query, [passage], "doc")
                gen_llm.reset()
                gen_llm.eval(prompt.segments[0])
                state = save_sequence(gen_llm)
                gen_llm.reset()
                load_sequence(gen_llm, state)
                restored = model.tokenizer.decode(_greedy(gen_llm, prompt.suffix_ids, new_tokens, eos),
                                                  skip_special_tokens=True)
                gen_llm.reset()
                plain = model.tokenizer.decode(_greedy(gen_llm, prompt.prompt_ids(), new_tokens, eos),
                                               skip_special_tokens=True)
                same_state += restored == plain
            del gen_llm
            # embeddings and embedding-source doc caching: one context, embeddings and the causal mask switched
            emb_llm = _llama(path, 2048, threads, embedding=True)
            cosines = []
            for text, instr, mine in zip(texts, instructions, ours):
                item = build_inputs(model, [text], instruction=instr, max_length=512)[0]
                llama_cpp.llama_set_causal_attn(emb_llm.ctx, False)
                hidden = _per_token(emb_llm, item.ids)[item.text_start:].mean(axis=0)
                hidden /= np.linalg.norm(hidden)
                cosines.append(float(hidden @ mine))
            for (query, passage), ref in zip(pairs, reference):
                prompt = rag.build_prompt(model, query, [passage], "doc")
                llama_cpp.llama_set_causal_attn(emb_llm.ctx, False)
                _per_token(emb_llm, prompt.segments[0])  # the document as it is embedded: bidirectional
                llama_cpp.llama_set_causal_attn(emb_llm.ctx, True)
                llama_cpp.llama_set_embeddings(emb_llm.ctx, False)
                text = model.tokenizer.decode(_greedy(emb_llm, prompt.suffix_ids, new_tokens, eos),
                                              skip_special_tokens=True)
                llama_cpp.llama_set_embeddings(emb_llm.ctx, True)
                same_emb_source += text.strip() == ref["embedding_source_text"].strip()
            del emb_llm
            entry.update({
                "generation_same_answer_as_torch": same_text / len(pairs),
                "restored_state_same_answer_as_uncached": same_state / len(pairs),
                "embedding_cosine_to_torch": {"min": min(cosines), "mean": float(np.mean(cosines))},
                "embedding_source_doc_cache_same_answer_as_torch": same_emb_source / len(pairs),
            })
            print(f"{spec} {dtype}: {json.dumps(entry)}", flush=True)
            report["dtypes"][dtype] = entry
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")
    return report


def main(
    model: Annotated[str, typer.Option(help="A packaged alias (its tokenizer comes from the packaged GGUF).")] = "grit-smollm2-135m",
    dtypes: Annotated[str, typer.Option(help=f"Comma-separated GGUF weight types from {', '.join(GGUF_DTYPES)}.")] = "f32,f16",
    queries: Annotated[int, typer.Option(min=1)] = 20,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    new_tokens: Annotated[int, typer.Option(min=1)] = 16,
    output: Annotated[Path, typer.Option()] = ROOT / "benchmarks" / "results" / "llama_cpp_grit.json",
) -> None:
    chosen = [d.strip() for d in dtypes.split(",") if d.strip()]
    bad = [d for d in chosen if d not in GGUF_DTYPES]
    if bad:
        raise typer.BadParameter(f"unknown {bad}; choose from {', '.join(GGUF_DTYPES)}", param_hint="--dtypes")
    compare(model, chosen, queries, threads, new_tokens, output)


if __name__ == "__main__":
    typer.run(main)
