#!/usr/bin/env bash
# The GPU figures of docs/performance.md, on one GPU, in about 6 minutes by estimate (not yet timed):
# run from the repository root with the project's environment active (`make install`, then
# `source .venv/bin/activate`). Each benchmark writes benchmarks/results/<benchmark>-<gpu>.{md,json};
# commit those files. The log of the whole check goes to benchmarks/results/gpu_check-<date>.log.
#
#   bash benchmarks/gpu_check.sh            # everything
#   QUICK=1 bash benchmarks/gpu_check.sh    # tiny sizes: that every step runs on this GPU
set -euo pipefail

cd "$(dirname "$0")/.."
python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU visible")'
log="benchmarks/results/gpu_check-$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee "$log") 2>&1

if [[ -n "${QUICK:-}" ]]; then
    base=(--hidden 128 --layers 2) pretrain_steps=3 batch=32 finetune_steps=20 precision_steps=20
else
    base=(--hidden 768 --layers 12) pretrain_steps=20 batch=256 finetune_steps=300 precision_steps=200
fi

echo "== the pre-training step replayed as CUDA graphs trains as the eager step (with a summed gradient too; and fine-tuning's)"
python -m pytest -q tests/test_pretrain.py tests/test_training.py tests/test_distributed.py -k "graph" -p no:cacheprovider

echo "== pre-training throughput: BERT-base at the paper's batch, lengths 128 and 512"
python benchmarks/pretrain_throughput.py --device cuda "${base[@]}" --batch-size "$batch" --lengths 128 512 \
    --steps "$pretrain_steps"

echo "== pre-training throughput on BERT's recipe (short sequences): packed against one sequence per row"
python benchmarks/pretrain_throughput.py --device cuda "${base[@]}" --batch-size "$batch" --lengths 128 512 \
    --steps "$pretrain_steps" --data recipe --contenders crossdisc one-per-row

echo "== fine-tuning throughput (the packaged MiniLM)"
python benchmarks/finetune_throughput.py --device cuda --steps "$finetune_steps"

echo "== pre-training in bf16 against fp32, and graphs against eager steps (no dropout)"
python benchmarks/pretrain_precision.py --device cuda "${base[@]}" --batch-size 32 --steps "$precision_steps" \
    --no-dropout

echo "== done: results in benchmarks/results/, this log in $log"
