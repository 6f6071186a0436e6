"""Files in benchmarks' own formats, written by the adapter tests into tmp_path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile


def write_audio(path: Path, seconds: float = 0.1) -> Path:
    """A tiny silent WAV / FLAC (by suffix) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(int(16000 * seconds), dtype="float32"), 16000)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


class FakeJudge:
    """A judge that returns fixed scores and keeps what it was asked."""

    def __init__(self, scores):
        self.scores = scores
        self.items = None

    def score(self, items):
        self.items = list(items)
        return list(self.scores)
