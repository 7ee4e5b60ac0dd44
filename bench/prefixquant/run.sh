#!/usr/bin/env bash
# PrefixQuant acceptance: static per-tensor with the outlier-token prefix vs without, vs per-token dynamic (w8a8-dynamic)
# and QuaRot W4A8, on one model. Usage: bench/prefixquant/run.sh MODEL CALIB EVAL OUT [SEQ_LEN]
# Baselines are calibrated and verified on text with BOS against the original. The prefix recipes take text without
# BOS (their prefix starts with it: --no-bos) and are verified against the float model with the same prefix
# (prefix_tokens alone, the tokens the recipe found), i.e. the original on [prefix, x]. Prints a Markdown table.
set -euo pipefail
model=$1 calib=$2 eval=$3 out=$4 seq=${5:-128}
root=$(cd "$(dirname "$0")/../.." && pwd)
q() { QUANTC_NO_BUILD=1 "$root/quantc" "$@"; }
mkdir -p "$out"
for t in tokenizer.model tokenizer.json; do [ -f "$(dirname "$model")/$t" ] && cp "$(dirname "$model")/$t" "$out/"; done
row() {  # recipe reference verify.json prefix
    python3 - "$@" <<'PY'
import json, sys
r, ref, path, prefix = sys.argv[1:5]
d = json.load(open(path)); lg = next(o for o in d["outputs"] if o["name"] == "logits"); l = d["logits"]
print(f"| {r} | {prefix} | {ref} | {lg['sqnr_db']:.2f} | {100 * l['top1_agreement']:.1f} % | "
      f"{l['perplexity_original']:.3f} → {l['perplexity_compiled']:.3f} |")
PY
}
echo "| recipe | prefix | reference (data) | logits SQNR dB | top-1 | perplexity ref → compiled |"
echo "|---|---|---|---|---|---|"
for r in w8a8-dynamic quarot-w4a8 prefixquant-w8a8-noprefix prefixquant-w4a4kv4-noprefix; do
    q compile "$model" --recipe "$r" --calib "$calib" --seq-len "$seq" -o "$out/$r.onnx" --force --no-verify > "$out/$r.log" 2>&1
    q verify "$model" "$out/$r.onnx" --data "$eval" --seq-len "$seq" --json --no-layers > "$out/$r.verify.json" 2>> "$out/$r.log" || true
    row "$r" "original (with BOS)" "$out/$r.verify.json" "—"
done
for r in prefixquant-w8a8 prefixquant-w4a8kv4 prefixquant-w4a4kv4; do
    q compile "$model" --recipe "$r" --calib "$calib" --seq-len "$seq" --no-bos -o "$out/$r.onnx" --force --no-verify \
        --report "$out/$r.report.json" > "$out/$r.log" 2>&1
    tokens=$(python3 -c "import json, sys
log = json.load(open(sys.argv[1]))['log']
print(next(l for l in log if ' prefix tokens [' in l).split('[')[1].split(']')[0])" "$out/$r.report.json")
    printf 'name: float-prefix\npasses:\n  - prefix_tokens: { tokens: [%s] }\n' "$tokens" > "$out/ref-$r.yaml"
    q compile "$model" --recipe "$out/ref-$r.yaml" -o "$out/ref-$r.onnx" --force --no-verify > "$out/ref-$r.log" 2>&1
    q verify "$out/ref-$r.onnx" "$out/$r.onnx" --data "$eval" --seq-len "$seq" --no-bos --json --no-layers > "$out/$r.verify.json" \
        2>> "$out/$r.log" || true
    row "$r" "float + prefix (no BOS)" "$out/$r.verify.json" "[$tokens]"
done
