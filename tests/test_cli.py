"""The `grit` command line (core commands)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from grit_components.cli import app

runner = CliRunner()


def test_embed_texts_to_jsonl_stdout(tiny_llama_dir, tiny_model):
    result = runner.invoke(app, ["embed", "first text", "second", "--model", str(tiny_llama_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["text"] for r in rows] == ["first text", "second"]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), tiny_model.embed(["first text", "second"]),
                               atol=1e-5)


def test_embed_jsonl_file_to_npy(tiny_llama_dir, tiny_model, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"body": t}) for t in ["a", "b c", "d e f"]) + "\n")
    out = tmp_path / "vectors.npy"
    result = runner.invoke(app, ["embed", "--input", str(source), "--field", "body", "--output", str(out),
                                 "--instruction", "Represent", "--model", str(tiny_llama_dir)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), tiny_model.embed(["a", "b c", "d e f"], instruction="Represent"), atol=1e-5)


def test_embed_errors_are_messages_not_tracebacks(tiny_llama_dir, tmp_path):
    missing = runner.invoke(app, ["embed", "--input", str(tmp_path / "nope.jsonl"), "--model", str(tiny_llama_dir)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    broken = runner.invoke(app, ["embed", "--input", str(bad), "--model", str(tiny_llama_dir)])
    assert broken.exit_code == 2 and "bad.jsonl:2" in broken.output
    alias = runner.invoke(app, ["embed", "x", "--model", "no-such-alias"])
    assert alias.exit_code == 2 and "unknown model alias" in alias.output
    assert "Traceback" not in alias.output


def test_chat_one_message(tiny_llama_dir, tiny_model):
    result = runner.invoke(app, ["chat", "Hello", "--model", str(tiny_llama_dir), "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert tiny_model.generate("Hello", max_new_tokens=6).text in result.stdout


def test_demo_answer_check_names_the_title_as_a_whole_phrase():
    from grit_components.cli.pipelines import names_answer

    assert names_answer("Executive (government)", "Executive (government)")  # ends with ")": no \b there
    assert names_answer("It is the Rock Dove.", "rock dove")
    assert not names_answer("Dalton", "Dalton (unit)")
    assert not names_answer("Amman-based", "Amma")
    assert not names_answer("Religious conversions", "Religious conversion")
    assert names_answer("1500", "1,500") and names_answer("about 1,500 species", "1500")
    assert not names_answer("15000", "1,500") and not names_answer("1,5000", "1,500")
