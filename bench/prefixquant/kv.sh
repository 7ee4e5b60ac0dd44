#!/usr/bin/env bash
# PrefixQuant's KV cache: prefixquant-w4a8kv4 with the KV cache quantized dynamically (per token and head, as committed)
# vs static scales (quantize_kv static_scales: per head, or per tensor), each with and without the prefix.
# Usage: bench/prefixquant/kv.sh MODEL CALIB EVAL OUT [SEQ_LEN]. Same protocol as run.sh: the prefix rows (--no-bos) are
# verified against the float model with the same prefix, the no-prefix rows (BOS in the data) against the original.
set -euo pipefail
model=$1 calib=$2 eval=$3 out=$4 seq=${5:-128}
root=$(cd "$(dirname "$0")/../.." && pwd)
q() { QUANTC_NO_BUILD=1 "$root/quantc" "$@"; }
mkdir -p "$out"
for t in tokenizer.model tokenizer.json; do [ -f "$(dirname "$model")/$t" ] && cp "$(dirname "$model")/$t" "$out/"; done
base="$root/passes/Quantc.Passes/Recipes/prefixquant-w4a8kv4.yaml"
# variant NAME PREFIX(yes|no) KV-OPTIONS: the committed recipe with quantize_kv's options replaced (and prefix_tokens dropped).
variant() {
    local f="$out/$1.yaml"
    sed -e "s/^name: .*/name: $1/" -e "s/^  - quantize_kv: .*/  - quantize_kv: $3/" "$base" > "$f"
    [ "$2" = no ] && sed -i '/^  - prefix_tokens/d' "$f"
    echo "$f"
}
row() {  # name reference verify.json kv
    python3 - "$@" <<'PY'
import json, sys
r, ref, path, kv = sys.argv[1:5]
d = json.load(open(path)); lg = next(o for o in d["outputs"] if o["name"] == "logits"); l = d["logits"]
print(f"| {r} | {kv} | {ref} | {lg['sqnr_db']:.2f} | {100 * l['top1_agreement']:.1f} % | "
      f"{l['perplexity_original']:.3f} → {l['perplexity_compiled']:.3f} |")
PY
}
echo "| variant | KV cache (4 bits) | reference (data) | logits SQNR dB | top-1 | perplexity ref → compiled |"
echo "|---|---|---|---|---|---|"
while read -r name prefix kv label; do
    kv=${kv//\~/ } label=${label//\~/ }  # the list writes spaces as ~
    f=$(variant "$name" "$prefix" "$kv")
    if [ "$prefix" = yes ]; then
        q compile "$model" --recipe "$f" --calib "$calib" --seq-len "$seq" --no-bos -o "$out/$name.onnx" --force --no-verify \
            --report "$out/$name.report.json" > "$out/$name.log" 2>&1
        tokens=$(python3 -c "import json, sys
log = json.load(open(sys.argv[1]))['log']
print(next(l for l in log if ' prefix tokens [' in l).split('[')[1].split(']')[0])" "$out/$name.report.json")
        printf 'name: float-prefix\npasses:\n  - prefix_tokens: { tokens: [%s] }\n' "$tokens" > "$out/ref-$name.yaml"
        q compile "$model" --recipe "$out/ref-$name.yaml" -o "$out/ref-$name.onnx" --force --no-verify > "$out/ref-$name.log" 2>&1
        q verify "$out/ref-$name.onnx" "$out/$name.onnx" --data "$eval" --seq-len "$seq" --no-bos --json --no-layers \
            > "$out/$name.verify.json" 2>> "$out/$name.log" || true
        row "$name" "float + prefix [$tokens] (no BOS)" "$out/$name.verify.json" "$label"
    else
        q compile "$model" --recipe "$f" --calib "$calib" --seq-len "$seq" -o "$out/$name.onnx" --force --no-verify \
            --report "$out/$name.report.json" > "$out/$name.log" 2>&1
        q verify "$model" "$out/$name.onnx" --data "$eval" --seq-len "$seq" --json --no-layers > "$out/$name.verify.json" \
            2>> "$out/$name.log" || true
        row "$name" "original (with BOS)" "$out/$name.verify.json" "$label"
    fi
done <<'LIST'
kv-dynamic yes {~bits:~4,~clip_ratio:~0.95~} dynamic~per~token~and~head~(clip~0.95)
kv-static-head yes {~bits:~4,~static_scales:~true~} static~per~head
kv-static-tensor yes {~bits:~4,~static_scales:~true,~per_head:~false~} static~per~tensor
kv-dynamic-noprefix no {~bits:~4,~clip_ratio:~0.95~} dynamic~per~token~and~head~(clip~0.95)
kv-static-head-noprefix no {~bits:~4,~static_scales:~true~} static~per~head
LIST
