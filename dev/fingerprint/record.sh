#!/usr/bin/env bash
# Usage (from the repository root): dev/fingerprint/record.sh OUT_DIR; python3 dev/fingerprint/compare.py BEFORE AFTER.
# Record before a refactor, again after it, and compare: every metric must match (timings excluded).
# Fixed-seed behaviour fingerprint: 3 RL steps for three presets, and eval on the shipped base. $1 = output dir.
set -euo pipefail
OUT=$1; mkdir -p $OUT; rm -rf $OUT/rl_*
R=${R1LAB:-.venv/bin/r1lab}
export OMP_NUM_THREADS=2
for p in grpo dr_grpo dapo; do
  $R rl --recipe countdown_rl_quick --out $OUT/rl_$p --set preset=$p --set steps=3 --set prompts_per_step=4 \
     --set samples_per_prompt=4 --set max_new_tokens=96 --set eval_instances=8 --set sample_every=0 \
     --set train_instances=50 --set save_every=0 > $OUT/rl_$p.log 2>&1
done
$R rl --recipe countdown_rl_quick --out $OUT/rl_rpp --set advantage=reinforce_pp --set kl_as_reward=true --set kl_estimator=k1 --set steps=2 --set prompts_per_step=2 \
     --set samples_per_prompt=4 --set max_new_tokens=64 --set eval_instances=0 --set sample_every=0 --set mu=2 \
     --set train_instances=50 --set save_every=0 > $OUT/rl_rpp.log 2>&1
$R eval --model countdown-base --task countdown --n 24 --samples 2 --max-new-tokens 128 --out $OUT/eval.json > $OUT/eval.log 2>&1
$R eval --model $OUT/rl_grpo --task countdown --n 16 --samples 2 --max-new-tokens 96 --no-greedy --out $OUT/eval_rl.json > $OUT/eval_rl.log 2>&1
echo done
