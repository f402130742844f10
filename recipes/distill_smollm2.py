"""Write the base model's own answers as training targets (`recipes/data/smollm2-135m-distill.jsonl`).

`recipes/grit-smollm2-135m.yaml` mixes these into its generative data so that GRIT training keeps the
base model's general behaviour (plain chat, answering from a passage in its own words, answering
without retrieval) instead of only the WikiDesc answer format. Greedy answers of the packaged
SmolLM2-135M-Instruct (fp32) to three prompt sets:

- `chat`: general instructions written for this file (no retrieval);
- `rag-own-words`: a WikiDesc train passage (none from corpus-2k) with a question about it, in the
  uncached doc-first RAG format of `templates.rag_user_content`;
- `no-retrieval`: WikiDesc train questions ("What is described as '<query>'?") with no passage.

Run from the repository root (takes about 10 minutes on 2 CPU cores):
    python recipes/distill_smollm2.py --data ../shared/data/wikidesc
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import torch

from grit_components import load_model, templates
from grit_components.generation import chat_prompt_ids

CHAT_PROMPTS = [
    "What is the capital of France?", "Explain photosynthesis in simple terms.", "Give me three tips for better sleep.",
    "Write a haiku about the ocean.", "What is the difference between weather and climate?",
    "How do I boil an egg?", "Translate 'good morning' into Spanish.", "What is 12 times 7?",
    "Summarize the plot of Romeo and Juliet in two sentences.", "Why is the sky blue?",
    "List four planets of the solar system.", "What does a database index do?", "Write a short thank-you note to a teacher.",
    "What are the primary colors?", "How many days are in a leap year?", "Explain what a noun is.",
    "Give an example of a renewable energy source.", "What is the boiling point of water at sea level?",
    "Suggest a name for a pet cat.", "What is gravity?", "How do vaccines work?", "Write one sentence about autumn.",
    "What is the largest ocean on Earth?", "Explain what an algorithm is.", "Who wrote 'Hamlet'?",
    "What is the chemical symbol for gold?", "Give me a synonym for 'happy'.", "What is a prime number?",
    "How can I improve my handwriting?", "Describe a rainbow.", "What is the function of the heart?",
    "Explain the water cycle briefly.", "What is machine learning?", "Name three musical instruments.",
    "How do plants get water?", "What is the opposite of 'ancient'?", "Write a short poem about friendship.",
    "What is the speed of light?", "How do I make a cup of tea?", "What language is spoken in Brazil?",
    "Explain what inflation means.", "What is the tallest mountain in the world?", "Give me a fun fact about octopuses.",
    "What is the square root of 81?", "How should I prepare for a job interview?", "What is a volcano?",
    "Explain the difference between a virus and a bacterium.", "Write a sentence using the word 'curious'.",
    "What causes earthquakes?", "What is democracy?", "Recommend a healthy breakfast.", "What is an atom?",
    "How do airplanes stay in the air?", "What is the main ingredient of guacamole?", "Define the word 'empathy'.",
    "How many continents are there?", "What does a librarian do?", "Explain what a budget is.",
    "Tell me a short story about a brave mouse.", "What is the freezing point of water in Fahrenheit?",
    "Why do we have seasons?", "What is the purpose of a bridge?", "How do bees make honey?",
    "What is the Pythagorean theorem?", "Give two reasons to exercise regularly.", "What is a metaphor?",
    "Rewrite this sentence more politely: Give me the report now.", "What is the currency of Japan?",
    "How does a refrigerator keep food cold?", "What is the role of the United Nations?",
    "Explain recycling to a child.", "Name a famous painting and its painter.", "What is electricity?",
    "How can I save money on groceries?", "What are clouds made of?", "What is the longest river in Africa?",
    "Explain what a computer virus is.", "Write a two-line motivational message.", "What do pandas eat?",
    "What is the difference between a lake and a sea?", "How does the moon affect tides?",
    "What is a healthy amount of water to drink each day?", "Describe the taste of lemon.",
    "What is the past tense of 'run'?", "Why do leaves change color in autumn?", "What is a telescope used for?",
    "Explain supply and demand in one paragraph.", "What is the capital of Australia?",
    "Give me a simple recipe for pancakes.", "What is the human skeleton made of?", "What is a haiku?",
    "How do magnets work?", "What are the benefits of reading books?", "Convert 5 kilometers to meters.",
    "What is the difference between 'their' and 'there'?", "Describe the city of Paris in one sentence.",
    "What is an ecosystem?", "Why is exercise good for the brain?", "What is the Great Wall of China?",
    "Write a short apology for being late.", "What is a mammal?", "Hello! How are you today?",
]

RAG_QUESTIONS = ["What is {title}?", "Summarize this passage in one sentence.", "What is {title} known for?",
                 "Tell me two facts about {title}."]


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def finish_cleanly(text: str, finished: bool) -> str:
    """A cut-off answer is trimmed to its last full sentence (a target must not end mid-sentence)."""
    text = text.strip()
    if finished:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](\s|$)", text)]
    return text[: ends[-1]].strip() if ends else ""


def generate_batch(model, prompts: list[str], max_new_tokens: int) -> list[str]:
    ids = [chat_prompt_ids(model, p) for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):  # left padding: every prompt ends where its answer starts
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    with torch.inference_mode():
        out = model.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                   do_sample=False, temperature=None, top_p=None, top_k=None,
                                   pad_token_id=model.pad_token_id)
    eos = model.tokenizer.eos_token_id
    answers = []
    for row in out[:, width:].tolist():
        finished = eos in row
        row = row[: row.index(eos)] if finished else row
        answers.append(finish_cleanly(model.tokenizer.decode(row, skip_special_tokens=True), finished))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wikidesc"))
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "data" / "smollm2-135m-distill.jsonl")
    parser.add_argument("--rag", type=int, default=320, help="passage + question prompts")
    parser.add_argument("--no-retrieval", type=int, default=160, help="WikiDesc questions without a passage")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    held_out = {row["_id"] for row in load_jsonl(args.data / "corpus-2k.jsonl")}
    corpus = [row for row in load_jsonl(args.data / "corpus.jsonl") if row["_id"] not in held_out and row.get("title")]
    queries = load_jsonl(args.data / "train" / "queries.jsonl")
    items = [("chat", prompt) for prompt in CHAT_PROMPTS]
    for row in rng.sample(corpus, args.rag):
        passage = " ".join(row["text"].split()[:120])
        question = rng.choice(RAG_QUESTIONS).format(title=row["title"])
        items.append(("rag-own-words", templates.rag_user_content("none", question, passage)))
    for row in rng.sample(queries, args.no_retrieval):
        items.append(("no-retrieval", f"What is described as '{row['text']}'?"))

    model = load_model("smollm2-135m-instruct", dtype="float32")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    kept = 0
    with open(args.output, "w", encoding="utf-8") as handle:
        for start in range(0, len(items), args.batch_size):
            batch = items[start : start + args.batch_size]
            for (name, prompt), answer in zip(batch, generate_batch(model, [p for _, p in batch], args.max_new_tokens)):
                if not answer:
                    continue
                record = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                          "dataset": f"distill-{name}"}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                kept += 1
            print(f"{min(start + args.batch_size, len(items))}/{len(items)}", flush=True)
    print(f"wrote {kept} records to {args.output}")


if __name__ == "__main__":
    main()
