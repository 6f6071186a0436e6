"""``afnext chat`` streams the inference engine's answer, with a generation preset and single overrides."""

from __future__ import annotations

from afnext.cli import main
from afnext.inference.engine import Request, load_engine
from afnext.inference.generation import GenerationSettings
from tests.inference.tiny import write_wav


def test_chat_streams_the_engines_answer_with_a_preset(tmp_path, tiny_model_dir, capsys):
    clip = write_wav(tmp_path / "clip.wav", 2.5, seed=4)
    args = ["chat", "--checkpoint", str(tiny_model_dir), "--audio", str(clip), "What is it?"]
    assert main([*args, "--preset", "instruct", "--max-new-tokens", "7"]) == 0
    shown = capsys.readouterr().out
    settings = GenerationSettings(max_new_tokens=7, repetition_penalty=1.2)  # instruct, 7 tokens
    engine = load_engine(tiny_model_dir, device="cpu", settings=settings)
    messages = [{"role": "user", "content": "<sound>What is it?"}]
    expected = engine.generate([Request(messages, [str(clip)])])[0].text
    assert expected and shown == expected + "\n"
    assert main([*args, "--max-new-tokens", "7"]) == 0  # no preset: greedy without a penalty
    plain = engine.generate(
        [Request(messages, [str(clip)], settings.replace(repetition_penalty=1.0))]
    )
    assert capsys.readouterr().out == plain[0].text + "\n"
