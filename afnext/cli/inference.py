"""``afnext eval``, ``chat``, ``serve`` and ``export``: commands that load a saved model and answer with it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afnext.cli.training import print_config
from afnext.config import compose_config
from afnext.errors import ConfigError


def _generation_preset(name: str) -> dict[str, Any]:
    """A preset of ``conf/generation/`` as a dict (``greedy``, ``instruct``, ``captioner``, ``think``)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config("serve", [f"generation={name}"]).generation)  # type: ignore[return-value]


def _cmd_chat(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext chat",
        description='Ask about audio: afnext chat --checkpoint DIR --audio FILE "question". '
        "The answer is streamed; --think also shows the <think> reasoning. Decoding: greedy, 1024 new tokens, "
        "no repetition penalty, or a --preset of conf/generation/ (instruct, captioner, think: the AF-Next "
        "cards' settings); the flags below override single settings.",
    )
    parser.add_argument("question", help="the question (a <sound> placeholder is added if missing)")
    parser.add_argument(
        "--checkpoint", required=True, help="run, stage or model folder (afnext or HF)"
    )
    parser.add_argument(
        "--audio", action="append", default=[], help="audio file (repeat for several)"
    )
    parser.add_argument("--think", action="store_true", help="show the <think> reasoning")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--preset", default=None, help="generation preset (conf/generation/)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None, help="0: greedy (default)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    args = parser.parse_args(argv)
    if not args.audio:
        parser.error("give at least one --audio FILE")
    from afnext.evaluation.chat import chat
    from afnext.inference.generation import GenerationSettings

    flags = {
        "max_new_tokens": args.max_new_tokens,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
    }
    if args.temperature is not None:
        flags.update(do_sample=args.temperature > 0, temperature=args.temperature or None)
    preset = _generation_preset(args.preset) if args.preset else {"max_new_tokens": 1024}
    settings = GenerationSettings.from_mapping(preset, flags, where="afnext chat")
    chat(
        args.checkpoint,
        args.audio,
        args.question,
        think=args.think,
        system=args.system,
        settings=settings,
    )
    return 0


def _cmd_serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext serve",
        description="Serve a model with the OpenAI chat-completions API (text and input_audio parts, streaming, "
        "dynamic batching): afnext serve --checkpoint RUN --port 8000. Settings: conf/serve.yaml; the flags set "
        "its keys, other keys as overrides (batching.max_batch_size=32 generation=think). Docs: docs/serving.md.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="run, stage or model folder (afnext or HF)"
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--model-name", default=None, help="the name clients pass as model")
    parser.add_argument(
        "--api-key-env", default=None, help="env variable holding the API key (Bearer)"
    )
    parser.add_argument(
        "--audio-dir", default=None, help="folder audio_url parts may read files from"
    )
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/serve.yaml")
    args = parser.parse_intermixed_args(argv)
    flags = {
        "checkpoint": args.checkpoint,
        "port": args.port,
        "host": args.host,
        "model_name": args.model_name,
        "api_key_env": args.api_key_env,
        "audio_dir": args.audio_dir,
    }
    overrides = [
        *args.overrides,
        *(f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None),
    ]
    cfg = compose_config("serve", overrides)
    if args.cfg:
        print_config(cfg)
        return 0
    from omegaconf import OmegaConf

    from afnext.serving.server import serve_from_config

    serve_from_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return 0


def _cmd_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext export",
        description="Write a model in another format: afnext export --checkpoint RUN --format hf OUT writes a "
        "folder transformers' AudioFlamingo3 / MusicFlamingo classes and vLLM load (processor, chat template, "
        "generation defaults included); then `vllm serve OUT` (docs/serving.md).",
    )
    parser.add_argument("out", help="the folder to write (replaced atomically)")
    parser.add_argument("--checkpoint", required=True, help="run, stage or model folder")
    parser.add_argument("--format", choices=["hf"], default="hf", help="hf: transformers / vLLM")
    parser.add_argument(
        "--preset",
        default="instruct",
        help="generation defaults (conf/generation/; default instruct)",
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=None,
        help="longest audio (default 1800 for AF-Next)",
    )
    args = parser.parse_intermixed_args(argv)
    from afnext.inference.export import export_hf
    from afnext.inference.generation import GenerationSettings
    from afnext.interop import resolve_checkpoint
    from afnext.model import AudioLanguageModel

    model = AudioLanguageModel.from_pretrained(resolve_checkpoint(args.checkpoint))
    settings = GenerationSettings.from_mapping(_generation_preset(args.preset), where="--preset")
    out = export_hf(model, args.out, generation=settings, max_audio_seconds=args.max_audio_seconds)
    print(out)
    return 0


def _cmd_eval(argv: list[str]) -> int:
    if argv and argv[0] == "score":
        return _eval_score(argv)
    return _eval_run(argv)


def _eval_score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext eval",
        description="Evaluation. `afnext eval score benchmark=mmau predictions=FILE.json --json` scores a "
        "predictions file without a model: the benchmark's own file with each model output in the field its "
        "official script reads (MMAU: model_output; MMAR: answer_prediction, JSONL), or an {id, prediction} "
        "file with benchmark.root=DIR. Benchmarks: conf/benchmark/.",
    )
    parser.add_argument("action", choices=["score"], help="what to do")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides: benchmark=NAME predictions=PATH"
    )
    args = parser.parse_intermixed_args(argv)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from afnext.evaluation.benchmarks.score import result_tables, score_file

    cfg = compose_config("eval", args.overrides)
    if not cfg.get("predictions"):
        raise ConfigError("afnext eval score needs predictions=FILE (a predictions file to score)")
    if OmegaConf.is_missing(cfg.benchmark, "root"):
        cfg.benchmark.root = None  # not needed to score a file in the benchmark's own format
    benchmark = instantiate(cfg.benchmark, _convert_="all")
    config = OmegaConf.to_container(cfg, resolve=True)
    cache = Path(str(cfg.predictions)).expanduser().resolve().parent / "judge_cache"
    judge = _judge(config, {str(benchmark.name): benchmark}, cache)  # type: ignore[arg-type]
    result = score_file(benchmark, cfg.predictions, judge=judge)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for table in result_tables(result):
        console.print(table)
    return 0


def _judge(config: dict[str, Any], benchmarks: dict[str, Any], cache_dir: Path) -> Any:
    """The run's judge from ``judge.*`` (``None`` without an endpoint; a note on stderr when a benchmark is scored
    by one: its answers are kept, and ``afnext eval score ... judge.base_url=...`` scores them later)."""
    import sys

    from afnext.evaluation.judge import build_judge

    judge = build_judge(config.get("judge"), cache_dir=cache_dir)
    judged = [name for name, b in benchmarks.items() if getattr(b, "judge_scale", None)]
    if judge is None and judged:
        print(
            f"afnext eval: {', '.join(judged)} {'is' if len(judged) == 1 else 'are'} scored (partly) by an LLM "
            "judge and no judge is set: those scores stay empty. Give judge.base_url=http://HOST:PORT/v1 "
            "judge.model=NAME (any OpenAI-compatible endpoint; the key from judge.api_key_env, default "
            "OPENAI_API_KEY).",
            file=sys.stderr,
        )
    return judge


def _eval_overrides(overrides: Sequence[str]) -> list[str]:
    """``benchmark=[a,b]`` as Hydra composes several options of one group side by side: ``~benchmark
    +benchmark@benchmarks.a=a +benchmark@benchmarks.b=b`` (roots then at ``benchmarks.<name>.root``)."""
    out: list[str] = []
    for override in overrides:
        if override.startswith("benchmark=[") and override.endswith("]"):
            names = [n.strip() for n in override[len("benchmark=[") : -1].split(",") if n.strip()]
            if not names:
                raise ConfigError("benchmark=[] names no benchmark; e.g. benchmark=[mmau,mmar]")
            out += ["~benchmark", *(f"+benchmark@benchmarks.{n}={n}" for n in names)]
        else:
            out.append(override)
    return out


def _eval_run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext eval",
        description="Answer benchmarks with a model and score them: `afnext eval benchmark=mmau "
        "benchmark.root=DIR checkpoint=RUN [trainer.devices=N] [generation=think]`; several at once with "
        "`benchmark=[mmau,mmar] benchmarks.mmau.root=D1 benchmarks.mmar.root=D2`. Predictions are appended to "
        "<out_dir>/<benchmark>/predictions.jsonl as they finish (the same command resumes a killed run); "
        "results.json and results.md at the end. `afnext eval score ...` scores a predictions file. "
        "Docs: docs/evaluation.md.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (conf/eval.yaml)")
    args = parser.parse_intermixed_args(argv)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from afnext.evaluation.report import print_results
    from afnext.evaluation.runner import eval_dir, run_from_config

    cfg = compose_config("eval", _eval_overrides(args.overrides))
    if not cfg.get("checkpoint"):
        raise ConfigError(
            "afnext eval needs checkpoint=RUN_OR_MODEL_FOLDER (or `afnext eval score ...`)"
        )
    nodes = {str(k): (f"benchmarks.{k}", v) for k, v in cfg.benchmarks.items()}
    if cfg.get("benchmark") is not None:
        nodes = {str(cfg.benchmark.get("name", "benchmark")): ("benchmark", cfg.benchmark), **nodes}
    for name, (key, node) in nodes.items():
        if OmegaConf.is_missing(node, "root"):
            raise ConfigError(
                f"benchmark {name}: set {key}.root=DIR (the folder holding its release)"
            )
    if not nodes:
        raise ConfigError("afnext eval: no benchmark; give benchmark=NAME or benchmark=[a,b]")
    benchmarks = {name: instantiate(node, _convert_="all") for name, (_, node) in nodes.items()}
    out_dir = eval_dir(cfg.checkpoint, cfg.paths.root_dir, cfg.run_name, cfg.out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    # The judge is built (and its key checked) before any answer is generated.
    judge = _judge(config, benchmarks, out_dir / "judge_cache")  # type: ignore[arg-type]
    logger = None
    if cfg.get("logger") is not None:
        logger = instantiate(cfg.logger, save_dir=str(out_dir), name=out_dir.name, _convert_="all")
    try:
        results = run_from_config(benchmarks, config, out_dir=out_dir, logger=logger, judge=judge)  # type: ignore[arg-type]
    finally:
        if logger is not None:
            from afnext.training.loggers import finish_logger

            finish_logger(logger)
    if results is None:  # a rank beside global rank 0: it reports nothing
        return 0
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results)
    return 0
