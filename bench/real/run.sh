#!/usr/bin/env bash
# The real-model acceptance set (issue 15): builds the trained LLaMA of ../shared/real/ (babyllama-tok105) through the
# safetensors loader, compiles every transformer recipe with calibration text from the first part of TinyStories, and
# verifies each on a disjoint later part of TinyStories (document-aligned) and on WikiText-2 (one stream cut every
# --seq-len tokens): logits SQNR, top-1 agreement, perplexity, file size, and (TinyStories run) how many of 64 tokens
# greedy decoding from BOS generates as fp32 does before the first divergence. Writes a markdown table.
#
#   bench/real/run.sh [OUT_DIR]          (default out/real; the table goes to OUT_DIR/results.md and stdout)
#
# Environment: REAL (default ../shared/real beside the repository), SAMPLES (verification samples, default 64),
# CALIB_SAMPLES (default 64), SEQ (tokens per sample, default 128), RECIPES (default: every built-in recipe but Mamba's),
# FLAVOR (graph shape of the model: torch, the default, or ortgenai — GenAI's builder shape with GroupQueryAttention).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
real="${REAL:-$here/../shared/real}"
out="${1:-$here/out/real}"
samples="${SAMPLES:-64}"
calib_samples="${CALIB_SAMPLES:-64}"
seq="${SEQ:-128}"
if [ ! -f "$real/babyllama-tok105/model.safetensors" ]; then
  echo "bench/real: $real/babyllama-tok105 not found (the real models live in ../shared/real beside the repository; set REAL)" >&2
  exit 2
fi
mkdir -p "$out"
"$here/quantc" --help >/dev/null # build once
q() { QUANTC_NO_BUILD=1 "$here/quantc" "$@"; }

# Data: TinyStories validation, split at a blank line: calibration from the first ~45 %, evaluation from the last ~45 %
# (disjoint: the stories in between are in neither); WikiText-2 test as it is.
ts="$real/text/tinystories-valid.txt"
lines=$(wc -l < "$ts")
awk -v n=$((lines * 45 / 100)) 'NR <= n { print; next } /^[[:space:]]*$/ { exit } { print }' "$ts" > "$out/calib-tinystories.txt"
tail -n $((lines * 45 / 100)) "$ts" | awk 'started { print; next } /^[[:space:]]*$/ { started = 1 }' > "$out/eval-tinystories.txt"
cp "$real/text/wikitext2-test.txt" "$out/eval-wikitext2.txt"

model="$out/babyllama-tok105.onnx"
q models llama --config "$real/babyllama-tok105/config.json" --weights "$real/babyllama-tok105/model.safetensors" -o "$model" --force \
  ${FLAVOR:+--flavor "$FLAVOR"} >/dev/null
cp "$real/babyllama-tok105/tokenizer.model" "$out/tokenizer.model"

recipes="${RECIPES:-$(q recipes | awk -F: '/^[a-z0-9-]+: ./ { print $1 }' | grep -vE '^(mamba|quamba)')}"
size() { local b=0 f; for f in "$@"; do [ -f "$f" ] && b=$((b + $(stat -c %s "$f"))); done; echo "$b"; }
verify() { # model data [extra]: "sqnr top1 ppl_orig ppl_compiled greedy"
  q verify "$model" "$1" --data "$2" --samples "$samples" --seq-len "$seq" --no-layers --json ${3:-} \
    | jq -r '[(.outputs[] | select(.name == "logits") | .sqnr_db), .logits.top1_agreement, .logits.perplexity_original, .logits.perplexity_compiled,
             "\(.greedy.matching_tokens)/\(.greedy.steps)"] | @tsv'
}

table="$out/results.md"
{
  echo "| recipe | size (KiB) | TinyStories SQNR dB | top-1 | perplexity | greedy | WikiText-2 SQNR dB | top-1 | perplexity | compile s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} > "$table"
base_ts=$(verify "$model" "$out/eval-tinystories.txt")
base_wt=$(verify "$model" "$out/eval-wikitext2.txt" --no-doc-split)
printf '| fp32 | %d | – | – | %.3f | – | – | – | %.3f | – |\n' $(( $(size "$model" "$model.data") / 1024 )) \
  "$(cut -f3 <<<"$base_ts")" "$(cut -f3 <<<"$base_wt")" >> "$table"
for r in $recipes; do
  compiled="$out/$r.onnx"
  start=$(date +%s.%N)
  if ! q compile "$model" --recipe "$r" --calib "$out/calib-tinystories.txt" --samples "$calib_samples" --seq-len "$seq" \
      -o "$compiled" --report "$out/$r.report.json" --no-verify --force > "$out/$r.compile.txt" 2>&1; then
    echo "| $r | refused: $(grep -m1 -E 'error|refus' "$out/$r.compile.txt" | cut -c1-120) ||||||||" >> "$table"
    continue
  fi
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  ts_row=$(verify "$compiled" "$out/eval-tinystories.txt")
  wt_row=$(verify "$compiled" "$out/eval-wikitext2.txt" --no-doc-split)
  # Perplexity: the compiled model's; "reference → compiled" where the reference is not the fp32 row's (a PrefixQuant model is
  # compared against the original reading its prefix first, on text without its own BOS).
  ppl() { local ref cmp base; ref=$(printf '%.3f' "$(cut -f3 <<<"$1")"); cmp=$(printf '%.3f' "$(cut -f4 <<<"$1")")
    base=$(printf '%.3f' "$(cut -f3 <<<"$2")"); [ "$ref" = "$base" ] && echo "$cmp" || echo "$ref → $cmp"; }
  printf '| %s | %d | %.1f | %.1f %% | %s | %s | %.1f | %.1f %% | %s | %.1f |\n' "$r" $(( $(size "$compiled" "$compiled.data") / 1024 )) \
    "$(cut -f1 <<<"$ts_row")" "$(echo "$(cut -f2 <<<"$ts_row") * 100" | bc -l)" "$(ppl "$ts_row" "$base_ts")" "$(cut -f5 <<<"$ts_row")" \
    "$(cut -f1 <<<"$wt_row")" "$(echo "$(cut -f2 <<<"$wt_row") * 100" | bc -l)" "$(ppl "$wt_row" "$base_wt")" "$secs" >> "$table"
done
{
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); flags: $(grep -m1 -ow -E 'avx2' /proc/cpuinfo || echo 'no avx2') $(grep -m1 -ow -E 'avx512_vnni' /proc/cpuinfo || echo 'no avx512_vnni') $(grep -m1 -ow -E 'avx_vnni' /proc/cpuinfo || true)"
  echo "Model: babyllama-tok105 (LLaMA, 0.94 M parameters, trained on TinyStories), built with \`quantc models llama --config --weights\`."
  echo "Calibration: $calib_samples × ≤ $seq tokens from the first 45 % of tinystories-valid.txt (document-aligned)."
  echo "TinyStories: $(q verify "$model" "$model" --data "$out/eval-tinystories.txt" --samples "$samples" --seq-len "$seq" --no-layers --json | jq -r .data) — the last 45 % of the file, disjoint from the calibration text."
  echo "WikiText-2: $(q verify "$model" "$model" --data "$out/eval-wikitext2.txt" --samples "$samples" --seq-len "$seq" --no-layers --no-doc-split --json | jq -r .data)."
} >> "$table"
cat "$table"
