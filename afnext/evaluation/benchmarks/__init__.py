"""Benchmark adapters: each reads a benchmark's released files, builds prompts and scores predictions.

One class per benchmark, built by Hydra from ``conf/benchmark/<name>.yaml`` (``_target_``); the interface is
:class:`~afnext.evaluation.benchmarks.base.Benchmark`. :func:`~afnext.evaluation.benchmarks.score.score_file`
scores a predictions file without a model (``afnext eval score``).
"""

from afnext.evaluation.benchmarks.base import (
    SOUND,
    BaseBenchmark,
    Benchmark,
    BenchmarkItem,
    PromptTemplate,
    read_records,
)
from afnext.evaluation.benchmarks.captioning import AudioCaps, CaptioningBenchmark, Clotho
from afnext.evaluation.benchmarks.covost2 import CoVoST2
from afnext.evaluation.benchmarks.librispeech import LibriSpeech
from afnext.evaluation.benchmarks.mmau_pro import MMAUPro
from afnext.evaluation.benchmarks.muchomusic import MuchoMusic
from afnext.evaluation.benchmarks.multiple_choice import MMAR, MMAU, MMSU, MultipleChoiceBenchmark
from afnext.evaluation.benchmarks.open_qa import LongAudioBench
from afnext.evaluation.benchmarks.score import (
    PREDICTION_KEYS,
    read_predictions,
    result_tables,
    score_file,
)
from afnext.evaluation.benchmarks.tacot import TACoT

__all__ = [
    "MMAR",
    "MMAU",
    "MMSU",
    "PREDICTION_KEYS",
    "SOUND",
    "AudioCaps",
    "BaseBenchmark",
    "Benchmark",
    "BenchmarkItem",
    "CaptioningBenchmark",
    "Clotho",
    "CoVoST2",
    "LibriSpeech",
    "LongAudioBench",
    "MMAUPro",
    "MuchoMusic",
    "MultipleChoiceBenchmark",
    "PromptTemplate",
    "TACoT",
    "read_predictions",
    "read_records",
    "result_tables",
    "score_file",
]
