#!/usr/bin/env bash
# PrefixQuant acceptance: static per-tensor with the outlier-token prefix vs without, vs per-token dynamic (w8a8-dynamic)
# and QuaRot W4A8, on one model. Usage: bench/prefixquant/run.sh MODEL CALIB EVAL OUT [SEQ_LEN]
# Baselines are calibrated and verified on text with BOS against the original. The prefix recipes take text without
# BOS (their prefix starts with it: --no-bos) and are verified against the float model with the same prefix
# (prefix_tokens alone, the tokens the recipe found), i.e. the original on [prefix, x]. Prints a Markdown table.
set -euo pipefail
model=$1 calib=$2 eval=$3 out=$4 seq=${5:-128}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/bench/prefixquant/common.sh"
echo "| recipe | prefix | reference (data) | logits SQNR dB | top-1 | perplexity ref → compiled |"
echo "|---|---|---|---|---|---|"
for r in w8a8-dynamic quarot-w4a8 prefixquant-w8a8-noprefix prefixquant-w4a4kv4-noprefix; do
    plain "$r" "$r"
    row "$r" "original (with BOS)" "$out/$r.verify.json" "—"
done
for r in prefixquant-w8a8 prefixquant-w4a8kv4 prefixquant-w4a4kv4; do
    prefixed "$r" "$r"
    row "$r" "float + prefix (no BOS)" "$out/$r.verify.json" "[$tokens]"
done
