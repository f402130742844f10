"""How the index job embeds (`EmbedderSettings`: the indexing YAML's `GritDocumentEmbedder`) and where it runs
(`RayOptions`: the Ray address, the actors and their resources, batch sizes)."""

from __future__ import annotations

from dataclasses import dataclass

from grit_components._checks import check_choice, check_float, check_int, check_str
from grit_components.indexing import IndexManifest


@dataclass(frozen=True)
class EmbedderSettings:
    """How chunks are embedded: the `GritDocumentEmbedder` settings of the indexing YAML, and the model.

    :param model: hub id, local directory, GGUF file or packaged alias (each actor loads it once).
    :param batch_size: texts per forward pass inside an actor.
    Other parameters as in `grit_components.GritEmbedder` and `IndexManifest`.
    """

    model: str
    instruction: str = ""
    max_length: int = 512
    normalize: bool = True
    meta_fields: tuple[str, ...] = ()
    meta_separator: str = "\n"
    batch_size: int = 32
    truncation: str = "warn"
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        check_str("model", self.model, allow_empty=False)
        check_str("instruction", self.instruction)
        check_int("max_length", self.max_length, minimum=2)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("truncation", self.truncation, ("warn", "error"))
        object.__setattr__(self, "meta_fields", tuple(self.meta_fields))

    def embedder(self, *, kv_cache_directory: str | None = None):
        from grit_components.components import GritEmbedder

        return GritEmbedder(self.model, document_instruction=self.instruction, batch_size=self.batch_size,
                            max_length=self.max_length, normalize=self.normalize, truncation=self.truncation,
                            device=self.device, dtype=self.dtype, kv_cache_directory=kv_cache_directory,
                            # a batch job reads no cache back: keep them on disk only
                            kv_cache_max_bytes=0 if kv_cache_directory else None)

    def manifest(self, embedder) -> IndexManifest:
        return IndexManifest.for_embedder(embedder, meta_fields=self.meta_fields, meta_separator=self.meta_separator)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the job runs.

    :param address: None or "local" (start a local Ray instance), "auto" (the cluster this machine belongs
        to), or a cluster address ("ray://head:10001", "head:6379").
    :param actors: embedding actors (each loads the model once).
    :param num_cpus: CPUs per actor (also its torch threads).
    :param num_gpus: GPUs per actor (fractions share a GPU).
    :param batch_size: chunks per actor call.
    :param write_batch_size: points per Qdrant write.
    """

    address: str | None = None
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 64
    write_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.address is not None:
            check_str("address", self.address, allow_empty=False)
        check_int("actors", self.actors, minimum=1)
        check_float("num_cpus", self.num_cpus, minimum=0, exclusive_minimum=True)
        check_float("num_gpus", self.num_gpus, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("write_batch_size", self.write_batch_size, minimum=1)

    @property
    def local(self) -> bool:
        return self.address in (None, "local")
