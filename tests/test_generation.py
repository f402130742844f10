"""Chat generation: formats, stop words, streaming, finish reasons, bad input."""

from __future__ import annotations

import pytest

from grit_components import templates
from grit_components.generation import chat_prompt_ids, cut_at_stop_words, normalize_messages


def test_grit_chat_format_folds_system_message():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"}]
    text = templates.grit_chat_prompt(messages, eos_token="</s>")
    assert text == "<|user|>\nBe brief.\n\nHi?\n<|assistant|>\nHello.</s>\n<|user|>\nBye?\n<|assistant|>\n"
    assert templates.fold_system_messages([{"role": "system", "content": "Only system"}]) == [
        {"role": "user", "content": "Only system"}]


def test_grit_chat_format_used_for_gritlm_models(tiny_llama_dir):
    from grit_components import ModelRegistry

    grit = ModelRegistry().acquire(str(tiny_llama_dir), chat_format="grit")
    ids = chat_prompt_ids(grit, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    assert ids[: len(grit.bos_ids)] == grit.bos_ids
    assert grit.tokenizer.decode(ids[len(grit.bos_ids):]) == "<|user|>\nS\n\nQ\n<|assistant|>\n"


def test_template_format_for_other_models(tiny_model):
    assert not tiny_model.uses_grit_chat_format  # SmolLM2's tokenizer has a chat template
    text = tiny_model.tokenizer.decode(chat_prompt_ids(tiny_model, "Q?"))
    assert "<|im_start|>user\nQ?<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_length_finish_reason_and_usage(tiny_model):
    result = tiny_model.generate("Say something long", max_new_tokens=5)
    prompt_len = len(chat_prompt_ids(tiny_model, "Say something long"))
    assert result.finish_reason == "length" and result.completion_tokens == 5
    assert result.usage == {"prompt_tokens": prompt_len, "completion_tokens": 5, "total_tokens": prompt_len + 5}
    assert 0 <= result.timings["time_to_first_token"] <= result.timings["total"]


def test_greedy_is_deterministic_and_streaming_matches(tiny_model):
    pieces: list[str] = []
    streamed = tiny_model.generate("Hello there", max_new_tokens=16, streaming_callback=pieces.append)
    plain = tiny_model.generate("Hello there", max_new_tokens=16)
    assert streamed.text == plain.text and "".join(pieces) == plain.text


def test_sampling_with_seed_is_reproducible(tiny_model):
    a = tiny_model.generate("Hello", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)
    b = tiny_model.generate("Hello", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)
    assert a.text == b.text


def test_seeded_sampling_leaves_the_global_generator_alone(tiny_model):
    import torch

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    texts = {tiny_model.generate("Hello", max_new_tokens=12, temperature=1.0, seed=seed).text for seed in (1, 2, 3)}
    assert torch.equal(torch.get_rng_state(), state)
    assert len(texts) == 3  # the seed is really used: a random model's samples differ between seeds
    greedy = tiny_model.generate("Hello", max_new_tokens=12).text
    assert greedy not in texts  # and it samples (not greedy), from the whole distribution at temperature 1


def test_seeded_sampling_does_not_depend_on_the_global_generator(tiny_model):
    import torch

    torch.manual_seed(0)
    first = tiny_model.generate("Hello", max_new_tokens=12, temperature=0.8, top_p=0.95, seed=7).text
    torch.manual_seed(99)
    torch.rand(1000)  # other code drawing numbers in between
    assert tiny_model.generate("Hello", max_new_tokens=12, temperature=0.8, top_p=0.95, seed=7).text == first


def test_seeded_sampling_applies_every_sampling_option(tiny_model):
    """The call's own sampler keeps transformers' sampling options (here top_k and min_p): top_k=1 leaves
    one token per step, so seeded sampling gives the greedy text; without it the seeds' texts differ."""
    greedy = tiny_model.generate("Hello", max_new_tokens=12).text
    for seed in (1, 2):
        assert tiny_model.generate("Hello", max_new_tokens=12, temperature=1.0, top_k=1, seed=seed).text == greedy
        assert tiny_model.generate("Hello", max_new_tokens=12, temperature=1.0, min_p=1.0, seed=seed).text == greedy


def test_bad_streaming_callback_fails_before_generating(tiny_model, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("generate ran with a non-callable streaming_callback")

    monkeypatch.setattr(tiny_model.model, "generate", must_not_run)
    with pytest.raises(TypeError, match="streaming_callback must be callable"):
        tiny_model.generate("hi", max_new_tokens=4, streaming_callback=42)


def test_cut_at_stop_words():
    assert cut_at_stop_words("one two three", ["two", "three"]) == ("one ", True)
    assert cut_at_stop_words("one", ["x"]) == ("one", False)


@pytest.mark.parametrize(
    ("messages", "kwargs", "error", "match"),
    [
        ("", {}, ValueError, "messages"),
        ([], {}, ValueError, "messages"),
        (None, {}, TypeError, "messages"),
        ([{"role": "user"}], {}, TypeError, r"messages\[0\]"),
        ([{"role": "robot", "content": "x"}], {}, ValueError, r"messages\[0\]"),  # "tool" is valid: tool results
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], {}, ValueError, "end with"),
        ("hi", {"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ("hi", {"max_new_tokens": "5"}, TypeError, "max_new_tokens"),
        ("hi", {"temperature": -1}, ValueError, "temperature"),
        ("hi", {"top_p": 0}, ValueError, "top_p"),
        ("hi", {"top_p": 1.5}, ValueError, "top_p"),
        ("hi", {"stop_words": "stop"}, TypeError, "stop_words"),
        ("hi", {"stop_words": [""]}, ValueError, r"stop_words'\]\[0\]"),
        ("hi", {"max_tokens": 5}, ValueError, "unknown generation_kwargs.*valid keys.*repetition_penalty"),
        ("hi", {"repetition_penalty": 0}, ValueError, "repetition_penalty"),
        ("hi", {"num_return_sequences": 2}, ValueError, "num_return_sequences"),
        ("hi", {"temperature": 1.0, "seed": "a"}, TypeError, "seed"),
        ("hi", {"temperature": 1.0, "seed": 1.5}, TypeError, "seed"),
        ("hi", {"temperature": 1.0, "seed": -1}, ValueError, "seed"),
        ("hi", {"temperature": 1.0, "seed": 2**64}, ValueError, "seed"),
        ("hi", {"seed": "a"}, TypeError, "seed"),  # greedy ignores the seed, but a wrong one is still an error
        ("hi", {"streaming_callback": "print"}, TypeError, "streaming_callback"),
        ("caf\udce9", {}, ValueError, "messages contains an unpaired surrogate"),
        ([{"role": "user", "content": "\ud800"}], {}, ValueError, r"messages\[0\]\['content'\] contains an unpaired"),
    ],
)
def test_bad_inputs(tiny_model, messages, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_model.generate(messages, **kwargs)


def test_prompt_longer_than_context_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="context length"):
        tiny_model.generate("word " * 5000, max_new_tokens=4)


def test_normalize_messages_str():
    assert normalize_messages("hi") == [{"role": "user", "content": "hi"}]


@pytest.mark.integration
def test_smollm2_answers_and_stops(smol):
    result = smol.generate("What is the capital of France? Answer in one word.", max_new_tokens=16)
    assert "paris" in result.text.lower() and result.finish_reason == "stop"
    pieces: list[str] = []
    stopped = smol.generate("Count from 1 to 10, separated by commas.", max_new_tokens=40, stop_words=["5"],
                            streaming_callback=pieces.append)
    assert "5" not in stopped.text and "4" in stopped.text and stopped.finish_reason == "stop"
    assert "".join(pieces) == stopped.text


def _new_token_ids(model, monkeypatch) -> list[list[int]]:
    """Record the new token ids of every `model.generate` call on the Hugging Face model."""
    calls: list[list[int]] = []
    real = model.model.generate

    def spy(*args, **kwargs):
        output = real(*args, **kwargs)
        calls.append(output[0, kwargs["input_ids"].shape[1]:].tolist())
        return output

    monkeypatch.setattr(model.model, "generate", spy)
    return calls


def test_any_generation_config_key_reaches_generate(tiny_model, monkeypatch):
    calls = _new_token_ids(tiny_model, monkeypatch)
    plain = tiny_model.generate("Hello there", max_new_tokens=12)
    assert len(set(calls[-1])) < len(calls[-1])  # the random tiny model repeats itself
    shaped = tiny_model.generate("Hello there", max_new_tokens=12, no_repeat_ngram_size=1, repetition_penalty=1.5)
    assert len(set(calls[-1])) == len(calls[-1]) == 12 and shaped.text != plain.text


def test_beam_search_runs_without_streaming(tiny_model):
    result = tiny_model.generate("Hello there", max_new_tokens=6, num_beams=2)
    assert result.completion_tokens <= 6 and isinstance(result.text, str)
    with pytest.raises(ValueError, match="num_beams=1"):
        tiny_model.generate("Hello there", max_new_tokens=6, num_beams=2, streaming_callback=print)


def test_streamed_text_never_shows_a_stop_word_that_arrives_inside_one_token(tiny_model):
    """" water" is one token: the streamer held back 4 characters ("water" is 5 long), so it used to stream
    "used in w" and return "used in "."""
    import torch

    from grit_components.generation import _CallbackStreamer

    pieces: list[str] = []
    streamer = _CallbackStreamer(tiny_model.tokenizer, pieces.append, ["water"], skip_prompt=False)
    ids = tiny_model.tokenizer("It is used in water purification", add_special_tokens=False)["input_ids"]
    assert tiny_model.tokenizer.decode(ids[-2:-1]) == " water"  # the case: the whole stop word in one token
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(pieces) == "It is used in "
