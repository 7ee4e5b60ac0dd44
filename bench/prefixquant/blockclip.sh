#!/usr/bin/env bash
# PrefixQuant's block-wise clipping search (clip_search scope: block) against the committed per-layer search and against
# per-token dynamic int8 (w8a8-dynamic), on one model and one or more evaluation texts.
# Usage: bench/prefixquant/blockclip.sh MODEL CALIB OUT EVAL [EVAL…]   (SEQ=128, BLOCK="scope: block" and
# RECIPES="prefixquant-w8a8 prefixquant-w4a4kv4" by default; BLOCK is the block variant's clip_search options; REUSE=1 keeps
# the layer variants and w8a8-dynamic already compiled in OUT)
# Each prefixquant recipe is compiled twice from the same text (--no-bos): as committed ("layer") and with only
# clip_search's scope changed to block ("block"); both are verified against the float model with the prefix the recipe
# found. w8a8-dynamic is calibrated and verified with BOS against the original. Prints one Markdown table per EVAL.
set -euo pipefail
model=$1 calib=$2 out=$3
shift 3
seq=${SEQ:-128}
root=$(cd "$(dirname "$0")/../.." && pwd)
eval=$1
. "$root/bench/prefixquant/common.sh"
recipes=${RECIPES:-prefixquant-w8a8 prefixquant-w4a4kv4}
block=${BLOCK:-scope: block}
for r in $recipes; do
    cp "$root/passes/Quantc.Passes/Recipes/$r.yaml" "$out/$r-layer.yaml"
    sed "s/^  - clip_search\$/  - clip_search: { $block }/" "$out/$r-layer.yaml" > "$out/$r-block.yaml"
    grep -q 'scope: block' "$out/$r-block.yaml"
    [ -n "${REUSE:-}" ] && [ -f "$out/$r-layer.onnx" ] || compile_prefixed "$r-layer" "$out/$r-layer.yaml"
    compile_prefixed "$r-block" "$out/$r-block.yaml"
done
[ -n "${REUSE:-}" ] && [ -f "$out/w8a8-dynamic.onnx" ] || q compile "$model" --recipe w8a8-dynamic --calib "$calib" \
    --seq-len "$seq" -o "$out/w8a8-dynamic.onnx" --force --no-verify \
    > "$out/w8a8-dynamic.log" 2>&1
for e in "$@"; do
    tag=$(basename "$e" .txt)
    echo
    echo "Evaluation: $e"
    echo
    echo "| variant | clip search | reference (data) | logits SQNR dB | top-1 | perplexity ref → compiled |"
    echo "|---|---|---|---|---|---|"
    q verify "$model" "$out/w8a8-dynamic.onnx" --data "$e" --seq-len "$seq" --json --no-layers \
        > "$out/w8a8-dynamic.$tag.verify.json" 2>> "$out/w8a8-dynamic.log" || true
    row w8a8-dynamic "original (with BOS)" "$out/w8a8-dynamic.$tag.verify.json" "—"
    for r in $recipes; do
        for s in layer block; do
            q verify "$out/ref-$r-$s.onnx" "$out/$r-$s.onnx" --data "$e" --seq-len "$seq" --no-bos --json --no-layers \
                > "$out/$r-$s.$tag.verify.json" 2>> "$out/$r-$s.log" || true
            row "$r" "float + prefix (no BOS)" "$out/$r-$s.$tag.verify.json" "$s"
        done
    done
done
