#!/usr/bin/env bash
# FireQ's acceptance set (issue 19): compiles FireQ's recipes, their ablations (bench/fireq/*.yaml) and the W4A8 baselines for
# the trained LLaMA of ../shared/real/ (babyllama-tok105; calibration on the first 45 % of tinystories-valid.txt, evaluation on
# a disjoint last 45 % and on WikiText-2) or the committed tiny reference LLaMA (models/calib.txt, models/eval.txt and
# WikiText-2), and verifies each: logits SQNR, top-1 agreement, perplexity. Also writes, per recipe, the per-tensor t chosen per
# layer and the group scales below 2^-9 at t = 1 and at t (from the compile report's reasons).
#
#   bench/fireq/run.sh real|tiny [OUT_DIR]      (default out/fireq-MODEL; the table goes to OUT_DIR/results.md and stdout)
#
# Environment: REAL (default ../shared/real), SAMPLES (verification samples, default 64), CALIB_SAMPLES (default 64), SEQ (128),
# RECIPES (names or YAML files; default below).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
which="${1:?real or tiny}"
out="${2:-$here/out/fireq-$which}"
samples="${SAMPLES:-64}"
calib_samples="${CALIB_SAMPLES:-64}"
seq="${SEQ:-128}"
real="${REAL:-$here/../shared/real}"
mkdir -p "$out"
"$here/quantc" --help >/dev/null # build once
q() { QUANTC_NO_BUILD=1 "$here/quantc" "$@"; }
cp "$real/text/wikitext2-test.txt" "$out/eval-wikitext2.txt"
if [ "$which" = real ]; then
  ts="$real/text/tinystories-valid.txt"
  lines=$(wc -l < "$ts")
  awk -v n=$((lines * 45 / 100)) 'NR <= n { print; next } /^[[:space:]]*$/ { exit } { print }' "$ts" > "$out/calib.txt"
  tail -n $((lines * 45 / 100)) "$ts" | awk 'started { print; next } /^[[:space:]]*$/ { started = 1 }' > "$out/eval.txt"
  model="$out/babyllama-tok105.onnx"
  q models llama --config "$real/babyllama-tok105/config.json" --weights "$real/babyllama-tok105/model.safetensors" -o "$model" --force >/dev/null
  cp "$real/babyllama-tok105/tokenizer.model" "$out/tokenizer.model"
else
  cp "$here/models/calib.txt" "$out/calib.txt"
  cp "$here/models/eval.txt" "$out/eval.txt"
  model="$out/tiny-llama.onnx"
  cp "$here/models/tiny-llama.onnx" "$model"
fi
b="$here/bench/fireq"
recipes="${RECIPES:-fireq fireq-noscale fireq-kv16 $b/fireq-no-channel.yaml $b/fireq-no-prerope.yaml $b/fireq-no-postrope.yaml $b/fireq-no-t.yaml
  $b/fireq-noscale-no-t.yaml $b/fireq-portable.yaml w4a8 quarot-w4a8 quarot-w4a8-kv4}"
verify() { # model data [extra]: "sqnr top1 ppl_orig ppl_compiled"
  q verify "$model" "$1" --data "$2" --samples "$samples" --seq-len "$seq" --no-layers --json ${3:-} \
    | jq -r '[(.outputs[] | select(.name == "logits") | .sqnr_db), .logits.top1_agreement, .logits.perplexity_original, .logits.perplexity_compiled] | @tsv'
}
table="$out/results.md"
ts_label=$([ "$which" = real ] && echo TinyStories || echo eval.txt)
{
  echo "| recipe | $ts_label SQNR dB | top-1 | perplexity | WikiText-2 SQNR dB | top-1 | perplexity | t per layer (2^e × layers) | group scales < 2^-9 at t = 1 → at t |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
} > "$table"
base_ts=$(verify "$model" "$out/eval.txt")
base_wt=$(verify "$model" "$out/eval-wikitext2.txt" --no-doc-split)
printf '| fp32 | – | – | %.3f | – | – | %.3f | – | – |\n' "$(cut -f3 <<<"$base_ts")" "$(cut -f3 <<<"$base_wt")" >> "$table"
for r in $recipes; do
  name=$(basename "$r" .yaml)
  compiled="$out/$name.onnx"
  if ! q compile "$model" --recipe "$r" --calib "$out/calib.txt" --samples "$calib_samples" --seq-len "$seq" \
      -o "$compiled" --report "$out/$name.report.json" --no-verify --force > "$out/$name.compile.txt" 2>&1; then
    echo "| $name | refused: $(grep -m1 -E 'error|refus' "$out/$name.compile.txt" | cut -c1-120) ||||||||" >> "$table"
    continue
  fi
  ts_row=$(verify "$compiled" "$out/eval.txt")
  wt_row=$(verify "$compiled" "$out/eval-wikitext2.txt" --no-doc-split)
  reasons=$(jq -r '.layers[].reasons[] | select(startswith("fireq_weights: int4"))' "$out/$name.report.json")
  tdist=$(grep -o 't = 2^[0-9]*' <<<"$reasons" | sort | uniq -c | awk '{ printf "%s%s ×%d", (NR > 1 ? ", " : ""), $4, $1 }' || true)
  under=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "of" && $(i + 2) == "group") { u1 += $(i - 1); n += $(i + 1) } }
    /at t = 1,/ { for (i = 1; i <= NF; i++) if ($i == "at" && $(i + 1) == "t;") ut += $(i - 1) } END { if (n) printf "%d → %d of %d", u1, ut, n }' <<<"$reasons")
  printf '| %s | %.2f | %.1f %% | %.3f | %.2f | %.1f %% | %.3f | %s | %s |\n' "$name" \
    "$(cut -f1 <<<"$ts_row")" "$(echo "$(cut -f2 <<<"$ts_row") * 100" | bc -l)" "$(cut -f4 <<<"$ts_row")" \
    "$(cut -f1 <<<"$wt_row")" "$(echo "$(cut -f2 <<<"$wt_row") * 100" | bc -l)" "$(cut -f4 <<<"$wt_row")" "${tdist:-–}" "${under:-–}" >> "$table"
done
{
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); flags: $(grep -m1 -ow -E 'avx2' /proc/cpuinfo || echo 'no avx2') $(grep -m1 -ow -E 'avx512_vnni' /proc/cpuinfo || echo 'no avx512_vnni')"
  echo "Calibration: $calib_samples × ≤ $seq tokens of $( [ "$which" = real ] && echo 'the first 45 % of tinystories-valid.txt (document-aligned)' || echo models/calib.txt)."
  echo "$ts_label: $(q verify "$model" "$model" --data "$out/eval.txt" --samples "$samples" --seq-len "$seq" --no-layers --json | jq -r .data)."
  echo "WikiText-2: $(q verify "$model" "$model" --data "$out/eval-wikitext2.txt" --samples "$samples" --seq-len "$seq" --no-layers --no-doc-split --json | jq -r .data)."
} >> "$table"
cat "$table"
