#!/usr/bin/env bash
# The GPU figures of docs/performance.md, on one GPU, in about 8 minutes by estimate (not yet timed):
# run from the repository root with the project's environment active (`make install`, then
# `source .venv/bin/activate`), or with a machine's own PyTorch and transformers (crossdisc is then
# imported from workflow/). Each benchmark writes <benchmark>-<gpu>.{md,json} to RESULTS_DIR
# (default benchmarks/results/; commit those files), and the log of the whole check goes there too.
# A step that fails or outlasts STEP_TIMEOUT seconds (default 300) does not stop the next ones; the
# check exits non-zero if any did. The steps run in the order of what they settle, most first.
#
#   bash benchmarks/gpu_check.sh            # everything
#   QUICK=1 bash benchmarks/gpu_check.sh    # tiny sizes: that every step runs on this GPU
set -u

cd "$(dirname "$0")/.." || exit 1
python=${PYTHON:-python3}
results=${RESULTS_DIR:-benchmarks/results}
export PYTHONPATH="workflow${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU visible")' || exit 1
mkdir -p "$results"
log="$results/gpu_check-$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee "$log") 2>&1

if [[ -n "${QUICK:-}" ]]; then
    base=(--hidden 128 --layers 2) pretrain_steps=3 batch=32 finetune_steps=20 precision_steps=20
else
    base=(--hidden 768 --layers 12) pretrain_steps=20 batch=256 finetune_steps=300 precision_steps=200
fi
failed=()

step() {  # step "what it checks" command...: run it, note a failure and go on
    echo "== $1"
    local started=$SECONDS
    timeout -k 30 "${STEP_TIMEOUT:-300}" "${@:2}" || failed+=("$1 (exit $?)")
    echo "   ($((SECONDS - started)) s)"
}

step "the pre-training step replayed as CUDA graphs trains as the eager step (with a summed gradient too; and fine-tuning's)" \
    "$python" -m pytest -q tests/test_pretrain.py tests/test_training.py tests/test_distributed.py -k "graph" \
    -p no:cacheprovider

step "pre-training throughput: BERT-base at the paper's batch, lengths 128 and 512" \
    "$python" benchmarks/pretrain_throughput.py --device cuda "${base[@]}" --batch-size "$batch" --lengths 128 512 \
    --steps "$pretrain_steps" --results-dir "$results"

step "pre-training in bf16 against fp32, and graphs against eager steps (no dropout)" \
    "$python" benchmarks/pretrain_precision.py --device cuda "${base[@]}" --batch-size 32 --steps "$precision_steps" \
    --no-dropout --results-dir "$results"

step "pre-training throughput on BERT's recipe (short sequences): packed against one sequence per row" \
    "$python" benchmarks/pretrain_throughput.py --device cuda "${base[@]}" --batch-size "$batch" --lengths 128 512 \
    --steps "$pretrain_steps" --data recipe --contenders crossdisc one-per-row --results-dir "$results"

step "fine-tuning throughput (the packaged MiniLM)" \
    "$python" benchmarks/finetune_throughput.py --device cuda --steps "$finetune_steps" --results-dir "$results"

if ((${#failed[@]})); then
    printf '== failed: %s\n' "${failed[@]}"
    exit 1
fi
echo "== done: results in $results/, this log in $log"
