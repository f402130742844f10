"""The CLI error contract: a user error prints `error: ...` naming the problem and exits 2 (found before any
model is loaded where it can be); a bug keeps its traceback. One test per probe of issue 12."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from grit_components.cli import app
from grit_components.cli import _common

runner = CliRunner()
NO_MODEL = "/nonexistent/model"  # a command that gets as far as loading it fails with another message


def _user_error(result, *fragments: str) -> str:
    """The printed error of a run that must end with the contract's exit status 2 and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert "error:" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    return result.output


def test_undecodable_input_file_names_file_and_line(tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("fine line\ncaf\xe9 au lait\n".encode("latin-1"))
    _user_error(runner.invoke(app, ["embed", "--input", str(source), "--model", NO_MODEL]),
                f"{source}:2", "not UTF-8")


def test_input_that_is_a_folder(tmp_path):
    _user_error(runner.invoke(app, ["embed", "--input", str(tmp_path), "--model", NO_MODEL]), "is not a file")


def test_missing_output_folder_is_found_before_loading_or_embedding(tmp_path):
    target = tmp_path / "missing" / "out.npy"
    output = _user_error(runner.invoke(app, ["embed", "text", "--output", str(target), "--model", NO_MODEL]),
                         "does not exist", str(target.parent))
    assert NO_MODEL not in output  # rejected before the model would have been loaded


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(tiny_llama_dir):
    _user_error(runner.invoke(app, ["embed", "text", "--device", "cuda", "--model", str(tiny_llama_dir)]),
                "device 'cuda' is not available", "cpu")


def test_lone_surrogate_in_a_text_argument(tiny_llama_dir):
    # What Python makes of undecodable bytes in argv (surrogateescape).
    _user_error(runner.invoke(app, ["embed", "caf\udce9", "--model", str(tiny_llama_dir)]),
                "texts[0]", "surrogate")


def test_chat_top_p_zero_is_rejected_with_the_cores_message_before_loading():
    output = _user_error(runner.invoke(app, ["chat", "hi", "--top-p", "0", "--model", NO_MODEL]), "top_p")
    assert NO_MODEL not in output


def test_chat_prompt_over_the_context_length(tiny_llama_dir):
    _user_error(runner.invoke(app, ["chat", "word " * 5000, "--model", str(tiny_llama_dir)]), "context length")


def test_eval_qrels_row_with_two_columns(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "Paris"}\n')
    (tmp_path / "dev" / "queries.jsonl").write_text('{"_id": "q1", "text": "capital of France"}\n')
    (tmp_path / "dev" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    _user_error(runner.invoke(app, ["eval", "retrieval", "--data", str(tmp_path), "--model", NO_MODEL,
                                    "--no-bm25", "--baseline", "none"]),
                "qrels.tsv:2", "3 tab-separated columns")


def test_damaged_model_weights(tmp_path, tiny_model_builder):
    directory = tiny_model_builder("llama", tmp_path / "damaged")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _user_error(runner.invoke(app, ["embed", "text", "--model", str(directory)]), "damaged or incomplete")


def test_missing_tokenizer_is_not_reported_as_missing_sentencepiece(tmp_path, tiny_model_builder):
    directory = tiny_model_builder("llama", tmp_path / "no-tokenizer")
    (directory / "tokenizer.json").unlink()
    output = _user_error(runner.invoke(app, ["embed", "text", "--model", str(directory)]), "no tokenizer files")
    assert "sentencepiece" not in output


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr("grit_components.cli.core.read_texts", broken)
    result = runner.invoke(app, ["embed", "text", "--model", NO_MODEL])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)


def test_debug_variable_shows_the_traceback_of_user_errors_too(monkeypatch):
    monkeypatch.setenv(_common.DEBUG_ENV, "1")
    result = runner.invoke(app, ["chat", "hi", "--top-p", "0", "--model", NO_MODEL])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_user_error_message_looks_through_a_pipelines_wrapper():
    class PipelineRuntimeError(Exception):  # Haystack's shape: a component name, raised `from` the cause
        def __init__(self, component_name):
            super().__init__("The following component failed to run: ...")
            self.component_name = component_name

    def wrapped(cause):
        try:
            raise PipelineRuntimeError("llm") from cause
        except PipelineRuntimeError as error:
            return error

    assert _common.user_error_message(wrapped(ValueError("the prompt is too long"))) == \
        "component 'llm': the prompt is too long"
    assert _common.user_error_message(wrapped(AttributeError("bug"))) is None
    assert _common.user_error_message(AttributeError("bug")) is None
    assert _common.user_error_message(FileNotFoundError("no such file: x")) == "no such file: x"
    unrelated = RuntimeError("internal")
    unrelated.__cause__ = ValueError("not a wrapper: its cause does not make it a user error")
    assert _common.user_error_message(unrelated) is None


def _bounds(command: str) -> dict[str, tuple]:
    """{option name: (min, max)} as the CLI declares them (None where unbounded)."""
    from typer.main import get_command

    group = get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return {p.name: (p.min, p.max) for p in params}


def test_chat_option_bounds_equal_the_cores():
    """Every value at a bound the CLI declares is accepted by the core, and the next value out is rejected
    by both; top_p (0, 1] is open at 0, which the parser cannot express: the core checks it before loading."""
    from grit_components.options import GenerationOptions

    bounds = _bounds("chat")
    defaults = {"max_new_tokens": 1, "temperature": 0.0, "top_p": 1.0}
    for name, step in (("max_new_tokens", 1), ("temperature", 1e-6)):
        low, high = bounds[name]
        assert low is not None and high is None
        GenerationOptions(**{**defaults, name: low})
        with pytest.raises(ValueError, match=name):
            GenerationOptions(**{**defaults, name: low - step})
    assert bounds["top_p"] == (None, None)
    for value in (0.0, 1.0 + 1e-6):
        _user_error(runner.invoke(app, ["chat", "hi", "--top-p", str(value), "--model", NO_MODEL]), "top_p")


def test_embed_option_bounds_equal_the_cores(tiny_model):
    from grit_components.embedding import embed

    def out_of_range(name: str, value: int) -> bool:
        try:
            embed(tiny_model, ["a text"], **{name: value})
        except ValueError as error:  # max_length=2 also fails, later: the GRIT prefix needs more tokens
            return f"{name} must be >=" in str(error)
        return False

    bounds = _bounds("embed")
    for name in ("batch_size", "max_length"):
        low, _ = bounds[name]
        assert not out_of_range(name, low) and out_of_range(name, low - 1)
