#!/usr/bin/env bash
# One GPU run for afnext_kernels: environment, kernel tests on CUDA, then the three benchmarks.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; logs go to $OUT (default ./gpu_check_out)
#   BENCH_SMOKE=1 bash benchmarks/gpu_check.sh   # dry run with tiny shapes (works on CPU too)
#
# Needs python (python3, or $PYTHON) with torch, triton, pytest and transformers; installs nothing and needs no
# afnext install: kernels/afnext_kernels is exposed through a symlink on PYTHONPATH. Each step has its own time
# limit (at most 13 minutes in all, 2.5 more with EVAL_CHECKPOINT; under 10 minutes expected on an H100 / H200
# with a cold Triton cache) and a failing step does not stop the next one. Logs: $OUT/{env,tests,bench_attention,bench_cross_entropy,bench_rote,
# bench_loss_memory,bench_train_step,bench_eval}.log
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PP="$(mktemp -d)"
ln -sfn "$PWD/kernels/afnext_kernels" "$PP/afnext_kernels"
export PYTHONPATH="$PP:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
SMOKE="${BENCH_SMOKE:-0}"
# A CPU dry run executes the Triton kernels in the interpreter.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export TRITON_INTERPRET=1
fi

step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"
  shift 2
  echo "=== $name (limit ${limit}s) ===" | tee "$OUT/$name.log"
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start))s ===" | tee -a "$OUT/$name.log"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'PYEOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for name in ("triton", "transformers", "xformers", "flash_attn"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:
        print(name, "unavailable:", type(err).__name__, err)
import afnext_kernels
print("afnext_kernels from", afnext_kernels.__file__)
PYEOF
} 2>&1 | tee "$OUT/env.log"

if [ "$SMOKE" = "1" ]; then
  TEST_SELECT=(tests/kernels/test_dispatch.py tests/kernels/test_rote.py -m "not slow")
else
  # The fast grid plus the CUDA cases of the slow grid (fp16 and bf16, head dims 32-80, windows, GQA).
  TEST_SELECT=(tests/kernels -m "not slow or gpu")
fi
# Tests: one fixed kernel configuration per shape (no autotuning); pyproject's addopts / timeout plugin are not
# assumed to exist there.
AFNEXT_KERNELS_AUTOTUNE=0 step tests 150 "$PY" -m pytest "${TEST_SELECT[@]}" -q -rs -p no:cacheprovider \
  -o addopts="" -W "ignore::pytest.PytestConfigWarning" --durations=10
step bench_attention 180 "$PY" benchmarks/bench_attention.py
step bench_cross_entropy 60 "$PY" benchmarks/bench_cross_entropy.py
step bench_rote 50 "$PY" benchmarks/bench_rote.py
# Whole-model steps need afnext's dependencies (hydra-core, soxr, soundfile, peft, ...) in $PY: install them from
# wheels carried to the machine first (pip install --no-index --find-links .whl ...), or these two are skipped.
if "$PY" -c "import afnext.model, hydra, soxr, soundfile" 2>/dev/null; then
  if [ "$SMOKE" = "1" ]; then
    step bench_loss_memory 120 "$PY" benchmarks/bench_loss_memory.py --tokens 2048
    step bench_train_step 120 "$PY" benchmarks/bench_train_step.py --smoke --steps 2
  else
    step bench_loss_memory 150 "$PY" benchmarks/bench_loss_memory.py --tokens 45000 --hidden 3584 --device cuda --bf16
    step bench_train_step 180 "$PY" benchmarks/bench_train_step.py --steps 4
  fi
  # Eval throughput on the GPU (issue 14): give a demo run folder carried to the machine, e.g.
  # EVAL_CHECKPOINT=.afnext/runs/tiny_<date> (make demo's; the run folder is a few MB).
  if [ -n "${EVAL_CHECKPOINT:-}" ]; then
    step bench_eval 150 "$PY" benchmarks/bench_eval.py --checkpoint "$EVAL_CHECKPOINT" --device cuda \
      --items 256 --repeats 2
  fi
else
  echo "=== bench_loss_memory, bench_train_step: skipped (afnext's dependencies are not installed in $PY) ===" \
    | tee "$OUT/bench_train_step.log"
fi
echo "logs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
