"""The Ray index job against `grit index` on the same WikiDesc passages, in one run.

1. `grit index` (indexing.yaml, in-process) indexes the passages as one .txt file each into embedded Qdrant:
   the baseline for embedding throughput (chunks per second of the document embedder) and wall time.
2. The Ray job (`grit index --ray local`, one actor with the same threads) indexes the same passages from
   JSONL into another embedded Qdrant: its actor's embedding throughput / the baseline's (goal >= 0.9x),
   and every vector's cosine with the baseline's vector of the same passage (goal >= 0.9999).
3. The Ray job again as a separate process on a fresh collection, killed (SIGKILL) once half of the
   points are written, then started again: the collection must hold exactly one point per passage, and
   the re-run must embed only what the killed run had not written.

Passages are the first `--n` of the corpus that fit in one chunk (200 words, the splitter's length), so
one passage is one point.

    python benchmarks/ray_index.py [--model smollm2-135m-instruct] [--n 1000] [--threads 2]

Prints the figures and writes benchmarks/results/ray_index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "wikidesc" / "corpus.jsonl"


def one_chunk_passages(path: Path, n: int, max_words: int = 200) -> list[dict]:
    passages = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            passage = json.loads(line)
            if len(passage["text"].split()) <= max_words:
                passages.append({"_id": passage["_id"], "title": passage["title"], "text": passage["text"]})
            if len(passages) == n:
                return passages
    raise SystemExit(f"{path} has fewer than {n} one-chunk passages")


def vectors(data_dir: Path, key: str) -> dict[str, np.ndarray]:
    """{passage id: vector} of a collection; `key` says where the passage id is (file name or source)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(data_dir / "qdrant"))
    try:
        out, offset = {}, None
        while True:
            records, offset = client.scroll("grit", limit=1000, offset=offset, with_payload=True, with_vectors=True)
            for record in records:
                meta = record.payload["meta"]
                name = meta["file_path"].removesuffix(".txt") if key == "file" else meta["source"]
                out[name] = np.asarray(record.vector, dtype=np.float64)
            if offset is None:
                return out
    finally:
        client.close()


def count_points(database: Path) -> int:
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.2) as connection:
                return connection.execute("SELECT count(*) FROM points").fetchone()[0]
        except sqlite3.OperationalError:
            time.sleep(0.05)
    return 0


def session_processes(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
    return [int(line.split()[0]) for line in out if line.strip() and int(line.split()[1]) == sid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of grit index and of the actor")
    parser.add_argument("--batch-size", type=int, default=64, help="chunks per embed call / actor call")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "ray_index.json")
    args = parser.parse_args()

    import torch

    from grit_components import distributed
    from haystack_integrations.common.grit import pipelines as hp

    torch.set_num_threads(args.threads)
    passages = one_chunk_passages(args.corpus, args.n)
    work = Path(tempfile.mkdtemp(prefix="grit-ray-bench-"))
    corpus_jsonl = work / "corpus.jsonl"
    corpus_jsonl.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages), encoding="utf-8")
    files = work / "files"
    files.mkdir()
    for passage in passages:
        (files / f"{passage['_id']}.txt").write_text(passage["text"], encoding="utf-8")

    # 1. grit index, in-process
    start = time.perf_counter()
    built = hp.load_pipeline("indexing", data_dir=work / "cli", model=args.model)
    try:
        cli = hp.index_files(built, hp.select_files([files]), batch_size=args.batch_size)
    finally:
        hp.close_pipeline(built)
    cli_wall = time.perf_counter() - start
    cli_rate = cli.chunks_embedded / cli.embed_seconds
    print(f"grit index: {cli.chunks_embedded} chunks, embedding {cli.embed_seconds:.1f}s ({cli_rate:.2f} chunks/s), "
          f"wall {cli_wall:.1f}s")

    # 2. the Ray job, in-process, one actor with the same threads
    data = hp.pipeline_data("indexing", data_dir=work / "ray", model=args.model)
    chunker = hp.RayChunker(data)
    options = distributed.RayOptions(actors=1, num_cpus=float(args.threads), batch_size=args.batch_size,
                                     write_batch_size=args.batch_size)
    start = time.perf_counter()
    ray_report = distributed.run_index_job(distributed.Corpus("jsonl", (str(corpus_jsonl),)), chunker,
                                           chunker.embedder_settings(args.model),
                                           hp.qdrant_target("indexing", data_dir=work / "ray"), options)
    ray_wall = time.perf_counter() - start
    (actor,) = ray_report.actors.values()
    print(f"ray job: {ray_report.written} points, actor embedding {actor.seconds:.1f}s ({actor.throughput:.2f} "
          f"chunks/s, {actor.threads} threads), wall {ray_wall:.1f}s (setup {ray_report.setup_seconds:.1f}s)")
    import ray

    ray.shutdown()
    expected, got = vectors(work / "cli", "file"), vectors(work / "ray", "source")
    cosines = np.array([float(expected[k] @ got[k] / np.linalg.norm(expected[k]) / np.linalg.norm(got[k]))
                        for k in expected])
    print(f"vectors: {len(got)} of {len(expected)} passages, cosine min {cosines.min():.6f}")

    # 3. killed half-way, then started again
    killed_dir = work / "killed"
    database = killed_dir / "qdrant" / "collection" / "grit" / "storage.sqlite"
    command = [sys.executable, "-m", "grit_components.cli", "index", str(corpus_jsonl), "--ray", "local",
               "--data-dir", str(killed_dir), "--model", args.model, "--cpus-per-actor", str(args.threads),
               "--batch-size", str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    while count_points(database) < args.n // 2 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = count_points(database)
    time.sleep(5)
    leftovers = session_processes(process.pid)  # Ray processes the killed driver started
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    again = subprocess.run([*command], env=env, capture_output=True, text=True)
    if again.returncode != 0:
        raise SystemExit(f"the re-run failed:\n{again.stderr}")
    written_again = int(again.stderr.split("points written: ")[1].split(",")[0])
    final = count_points(database)
    print(f"killed with {kept} points written; the re-run wrote {written_again}; the collection holds {final} points "
          f"({len(leftovers)} Ray processes outlived the killed driver)")

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                    "load_average": os.getloadavg()},
        "model": args.model, "passages": len(passages), "batch_size": args.batch_size,
        "grit_index": {"chunks": cli.chunks_embedded, "embed_seconds": cli.embed_seconds, "chunks_per_s": cli_rate,
                       "wall_seconds": cli_wall},
        "ray_job": {"points": ray_report.written, "embed_seconds": actor.seconds, "chunks_per_s": actor.throughput,
                    "actor_threads": actor.threads, "wall_seconds": ray_wall, "setup_seconds": ray_report.setup_seconds},
        "ratios": {"embedding_throughput_ray_over_grit_index": actor.throughput / cli_rate,
                   "wall_time_grit_index_over_ray": cli_wall / ray_wall},
        "vectors": {"compared": int(len(cosines)), "cosine_min": float(cosines.min()),
                    "cosine_mean": float(cosines.mean())},
        "kill_and_resume": {"points_when_killed": kept, "written_by_rerun": written_again, "points_after": final,
                            "expected_points": len(passages), "ray_processes_left_by_killed_driver": len(leftovers)},
    }
    print(f"embedding throughput, Ray job (1 actor) / grit index: "
          f"{result['ratios']['embedding_throughput_ray_over_grit_index']:.3f}x; "
          f"wall time ratio (grit index / Ray job, Ray start-up included): "
          f"{result['ratios']['wall_time_grit_index_over_ray']:.3f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
