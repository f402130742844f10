"""Planted model outputs: the real prompt is built and recorded, the text the model "generates" is given.

Agent tests need a model that calls tools on cue; a random tiny model never does and the 135M model does
not reliably. Replacing `grit_components.generation.generate_ids` keeps everything else real: the chat
template, the tool rendering, the parsing, the adapters and the frameworks' agents.
"""

from __future__ import annotations

from collections.abc import Sequence

from grit_components import generation


class PlantedOutputs:
    """Returns `outputs` in order (streaming them word by word when asked); `prompts` records each prompt."""

    def __init__(self, model, outputs: Sequence[str]):
        self.model = model
        self.outputs = list(outputs)
        self.prompts: list[str] = []

    def __call__(self, model, prompt_ids, options=None, *, past_key_values=None, streaming_callback=None, **kwargs):
        self.prompts.append(model.tokenizer.decode(list(prompt_ids)))
        text = self.outputs.pop(0)
        if streaming_callback is not None:
            for i, word in enumerate(text.split(" ")):
                streaming_callback(word if i == 0 else " " + word)
        completion = len(model.tokenize(text))
        return generation.GenerationResult(text=text, finish_reason="stop", prompt_tokens=len(prompt_ids),
                                           completion_tokens=completion, timings={"total": 0.0})


def plant(monkeypatch, model, outputs: Sequence[str]) -> PlantedOutputs:
    planted = PlantedOutputs(model, outputs)
    monkeypatch.setattr(generation, "generate_ids", planted)
    return planted
