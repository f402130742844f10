"""GRIT training: L = L_rep + lambda_gen * L_gen on the Hugging Face Trainer (accelerate) with optional LoRA.

Data formats and loaders in `data`, batches in GRIT format in `collator`, the loss in `loss`, the
Trainer in `trainer`, the typed YAML config in `config`, and `run.train(config)` behind `grit train`.
Needs the `train` extra (`pip install grit-components[train]`: peft, datasets, bm25s).
"""

from grit_components.training.collator import GritCollator, encode_chat, encode_texts
from grit_components.training.config import TrainConfig, load_config
from grit_components.training.data import (
    BadRecordsWarning,
    ChatRecord,
    EmbeddingRecord,
    RecordError,
    beir_embedding_records,
    beir_rag_records,
    load_chat_records,
    load_embedding_records,
    mine_hard_negatives,
    write_jsonl,
)
from grit_components.training.loss import chunked_info_nce_backward, generative_loss, info_nce_loss

__all__ = [
    "BadRecordsWarning", "ChatRecord", "EmbeddingRecord", "GritCollator", "RecordError", "TrainConfig",
    "beir_embedding_records", "beir_rag_records", "chunked_info_nce_backward", "encode_chat", "encode_texts",
    "generative_loss", "info_nce_loss", "load_chat_records", "load_config", "load_embedding_records",
    "mine_hard_negatives", "write_jsonl",
]
