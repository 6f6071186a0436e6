"""The afnext command line: help, info (meta build, counts), config printing, bad overrides."""

from __future__ import annotations

import json

from afnext.cli import main


def test_help_lists_commands_and_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("info", "config", "data", "encoder", "connector", "llm", "time_embedding"):
        assert word in out


def test_info_json_counts_parts(capsys):
    assert main(["info", "connector=stack_mlp", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["connector"]["class"] == "FrameStackConnector"
    parts = ("encoder", "time_embedding", "connector", "llm", "lora")
    assert counts["all"]["total"] == sum(counts[p]["total"] for p in parts)
    assert counts["time_embedding"]["total"] == 0


def test_info_table(capsys):
    assert main(["info", "time_embedding=none"]) == 0
    out = capsys.readouterr().out
    assert "AFWhisperEncoder" in out and "none" in out


def test_unknown_option_is_an_error_naming_it(capsys):
    assert main(["info", "encoder=nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err
