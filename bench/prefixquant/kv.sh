#!/usr/bin/env bash
# PrefixQuant's KV cache: prefixquant-w4a8kv4 with the KV cache quantized dynamically (per token and head, as committed)
# vs static scales (quantize_kv static_scales: per head, or per tensor), each with and without the prefix.
# Usage: bench/prefixquant/kv.sh MODEL CALIB EVAL OUT [SEQ_LEN]. Same protocol as run.sh: the prefix rows (--no-bos) are
# verified against the float model with the same prefix, the no-prefix rows (BOS in the data) against the original.
set -euo pipefail
model=$1 calib=$2 eval=$3 out=$4 seq=${5:-128}
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/bench/prefixquant/common.sh"
base="$root/passes/Quantc.Passes/Recipes/prefixquant-w4a8kv4.yaml"
# variant NAME PREFIX(yes|no) KV-OPTIONS: the committed recipe with quantize_kv's options replaced (and prefix_tokens dropped).
variant() {
    local f="$out/$1.yaml"
    sed -e "s/^name: .*/name: $1/" -e "s/^  - quantize_kv: .*/  - quantize_kv: $3/" "$base" > "$f"
    [ "$2" = no ] && sed -i '/^  - prefix_tokens/d' "$f"
    echo "$f"
}
echo "| variant | KV cache (4 bits) | reference (data) | logits SQNR dB | top-1 | perplexity ref → compiled |"
echo "|---|---|---|---|---|---|"
while read -r name prefix kv label; do
    kv=${kv//\~/ } label=${label//\~/ }  # the list writes spaces as ~
    f=$(variant "$name" "$prefix" "$kv")
    if [ "$prefix" = yes ]; then
        prefixed "$name" "$f"
        row "$name" "float + prefix [$tokens] (no BOS)" "$out/$name.verify.json" "$label"
    else
        plain "$name" "$f"
        row "$name" "original (with BOS)" "$out/$name.verify.json" "$label"
    fi
done <<'LIST'
kv-dynamic yes {~bits:~4,~clip_ratio:~0.95~} dynamic~per~token~and~head~(clip~0.95)
kv-static-head yes {~bits:~4,~static_scales:~true~} static~per~head
kv-static-tensor yes {~bits:~4,~static_scales:~true,~per_head:~false~} static~per~tensor
kv-dynamic-noprefix no {~bits:~4,~clip_ratio:~0.95~} dynamic~per~token~and~head~(clip~0.95)
kv-static-head-noprefix no {~bits:~4,~static_scales:~true~} static~per~head
LIST
