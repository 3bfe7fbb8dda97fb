#!/usr/bin/env bash
# GPU check (issue 16): benchmarks/gpu_check.py's parts, each under `timeout`, then ONE table. No downloads: the
# models are random Qwen2.5-0.5B / 1.5B shapes and the tokenizer is built on the spot.
#
#   scripts/gpu_check.sh [--json FILE] [--vllm-eager] [--smoke]
#   PYTHON=/path/to/python scripts/gpu_check.sh ...   # default .venv/bin/python, else python3; needs torch,
#                                                     # transformers, tokenizers and, for parts a and d, vllm
#                                                     # (0.32.0 tested on CPU)
# Run from anywhere; r1lab is imported from this checkout (PYTHONPATH), no install needed.
#
# Steps and their limits (12.5 minutes at most on one H200, 103 s without vLLM in session 27; a step that fails or is
# killed leaves ERROR rows and the next step still runs):
#   1. nvidia-smi and versions                                              ~10 s
#   2. torchrun --nproc_per_node <GPUs> gpu_check.py --part train          <= 300 s   b, c: FSDP2 MFU, peak memory
#      (three rows: compiled, eager, compiled + checkpointing; on one H200 about 40 s with the compile)
#   3. python gpu_check.py --part engine,vllm,sync                         <= 280 s   a, c, d: rollouts, weight sync
#      (inside: engine 45 s, vLLM build + rollout 150 s, sync 60 s. vLLM runs with CUDA graphs and torch.compile, as
#      RL would use it, about a minute to build; --vllm-eager builds faster and decodes slower. If that build fails
#      or outruns its time box, the sync part builds an eager engine of its own.)
#   4. python gpu_check.py --part rl                                       <= 160 s   e: `r1lab rl` 2 steps + resume
#   5. python gpu_check.py --table                                         the table; JSON too with --json FILE
# Without a CUDA device it runs in smoke mode: tiny configs, fp32, CPU, the FSDP part on 2 gloo processes (1-2 min).
#
# Expected output, the last lines (N, G, S: numbers; the notes are longer):
#   gpu_check: python 3.12.3, torch 2.11.0, transformers 5.17.0, vllm 0.32.0; NVIDIA H200
#   part  measure                         result             target      verdict  peak GiB  time s  note
#   a     rollout tok/s, r1lab engine     N                  -           ok       G         S       256 rows x 256 ...
#   a     rollout tok/s, vLLM             N                  -           ok       G         S       vllm 0.32.0, CUDA ...
#   a     vLLM / engine                   N.NNx              >= 5x       PASS
#   b     train MFU, FSDP2 + compile      N.N% (N tok/s)     >= 40%      PASS     G         S       1 rank(s) on cuda ...
#   b     train MFU, FSDP2 eager          N.N% (N tok/s)     -           ok       G         S       1 rank(s) on cuda ...
#   b     train MFU, compile + grad ckpt  N.N% (N tok/s)     -           ok       G         S       1 rank(s) on cuda ...
#   d     vLLM weight sync                N <= TOL           logp match  PASS     -         S       max |vLLM logp - ...
#   e     r1lab rl, 2 steps + resume      runs, resumes      exit 0      PASS     -         S       steps logged [1, 2]...
# Targets: vLLM >= 5x the engine's rollout tokens/s (0.5B, 256 x 256 new tokens; the engine in fp32 as `r1lab rl`
# samples with it, vLLM in bf16); training MFU >= 40% with torch_compile, without
# checkpointing (1.5B, FSDP2, bf16; MFU = 6 N tokens/s / (GPUs x 989.5 TFLOP/s)); the weight sync's log-probs match
# within the bf16 tolerance after the sync and not before the step's change. Verdicts: PASS / FAIL against a target,
# ok (measured, no target), ERROR (the part raised, outran its time box, or its process died: the note or the log
# above says which), SKIP (vllm not installed). Exit status 1 when any row is ERROR or FAIL (or SKIP on a GPU).
#
# Record the result in dev/LOG.md, newest last, as a section like:
#   ## GPU check (issue 16): <GPUs> x H200, <date>
#   `scripts/gpu_check.sh --json gpu_check.json` at commit <git rev-parse --short HEAD>; <the versions line>.
#   <the table as printed, in a ``` block>
#   One line per target: met or not, by how much, and what it suggests; every ERROR row's note and the lines of the
#   log that explain it; the vLLM mode (CUDA graphs or --vllm-eager) and its build time.
set -uo pipefail   # not -e: a failed step must not stop the others
JSON="" FLAGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) case ${2:?--json needs a file} in /*) JSON=$2 ;; *) JSON=$PWD/$2 ;; esac; shift 2 ;;
    --smoke|--vllm-eager|--bf16) FLAGS+=("$1"); shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (valid: --json FILE, --smoke, --vllm-eager, --bf16)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi  # scripts/install.sh's venv
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 30 nvidia-smi || echo "gpu_check.sh: nvidia-smi failed"
fi
GPUS=$(timeout 60 "$PY" -c "import sys, torch
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, file=sys.stderr)
print(torch.cuda.device_count())") || GPUS=0
case " ${FLAGS[*]-} " in *" --smoke "*) GPUS=0 ;; esac
if [ "$GPUS" -gt 0 ]; then
  NPROC=$GPUS T_TRAIN=300 T_ROLLOUTS=280
else
  echo "gpu_check.sh: no CUDA device (or --smoke): smoke mode on CPU, the FSDP part on 2 gloo processes"
  FLAGS+=(--smoke) NPROC=2 T_TRAIN=360 T_ROLLOUTS=300
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
ROWS=$(mktemp "${TMPDIR:-/tmp}/gpu_check-XXXXXX.jsonl")
echo "gpu_check.sh: rows in $ROWS"

step() {  # step LIMIT_S NAME COMMAND...: run under timeout (the whole process group), say how it ended
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" || rc=$?
  case $rc in
    0) echo "gpu_check.sh: $name done in $((SECONDS - t0)) s" ;;
    124|137) echo "gpu_check.sh: $name killed after its limit of $limit s" ;;
    *) echo "gpu_check.sh: $name exited with status $rc after $((SECONDS - t0)) s" ;;
  esac
}

step "$T_TRAIN" "train (torchrun, $NPROC processes)" "$PY" -m torch.distributed.run --standalone \
  --nproc_per_node "$NPROC" benchmarks/gpu_check.py --part train --rows "$ROWS" ${FLAGS[@]+"${FLAGS[@]}"}
step "$T_ROLLOUTS" "engine, vllm, sync" "$PY" benchmarks/gpu_check.py --part engine,vllm,sync --rows "$ROWS" \
  ${FLAGS[@]+"${FLAGS[@]}"}
step 160 "rl" "$PY" benchmarks/gpu_check.py --part rl --rows "$ROWS" ${FLAGS[@]+"${FLAGS[@]}"}
"$PY" benchmarks/gpu_check.py --table "$ROWS" ${JSON:+--json "$JSON"} ${FLAGS[@]+"${FLAGS[@]}"}
