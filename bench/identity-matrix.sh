#!/usr/bin/env bash
# The byte-identity matrix of a restructuring: compiles every built-in recipe on every committed
# reference model (and, with --small, the small ones of every arch and flavor, built on demand),
# and writes one line per (model, recipe): the exit code and the SHA-256 of the model and its
# external data (or of stderr's first line, for a recipe the model refuses).
#
#   bench/identity-matrix.sh before.txt [--small]      # on the commit before the change
#   bench/identity-matrix.sh after.txt  [--small]      # after it
#   diff before.txt after.txt                          # no output: byte-identical
#
# MATRIX_MODELS="a.onnx b.onnx" replaces the model list (e.g. the same small models for every commit of a series).
# MATRIX_SKIP=REGEX leaves out the recipes it matches (e.g. 'flexround|lrq': learned rounding takes minutes per
# compile; leave them out only when the change cannot reach their passes, and say so).
#
# Compare runs of one machine only: reduce_range: auto (the default) follows the compiling CPU
# (7-bit weights without VNNI), so the static W8A8 outputs differ between AVX2-only and VNNI hosts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:?usage: identity-matrix.sh OUT.txt [--small]}")"
small="${2:-}"
cd "$here"
./quantc --help >/dev/null  # builds once
export QUANTC_NO_BUILD=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

models=(models/tiny-llama.onnx models/tiny-llama-ortgenai.onnx models/tiny-opt.onnx models/tiny-opt-fused.onnx models/tiny-mamba.onnx)
if [ "$small" = "--small" ]; then
  cache="$here/.build/matrix-models"
  mkdir -p "$cache"
  for spec in llama:torch llama:ortgenai opt:torch opt:fused mamba:torch; do
    arch="${spec%%:*}"; flavor="${spec##*:}"
    f="$cache/small-$arch-$flavor.onnx"
    [ -f "$f" ] || ./quantc models "$arch" --size small --flavor "$flavor" -o "$f" >/dev/null
    models+=("$f")
  done
fi
if [ -n "${MATRIX_MODELS:-}" ]; then read -r -a models <<< "$MATRIX_MODELS"; fi
mapfile -t recipes < <(./quantc recipes | sed '/^passes:/,$d' | grep -E '^[a-z0-9][a-z0-9-]*:' | cut -d: -f1 |
  grep -Ev "${MATRIX_SKIP:-^\$}")

: > "$out"
for m in "${models[@]}"; do
  for r in "${recipes[@]}"; do
    q="$work/q.onnx"
    rm -rf "$work"/*
    set +e
    ./quantc compile "$m" --recipe "$r" -o "$q" --no-verify >/dev/null 2>"$work/err"
    code=$?
    set -e
    if [ "$code" -eq 0 ]; then
      h="$(sha256sum "$q" | cut -c1-16)"
      [ -f "$q.data" ] && h="$h+$(sha256sum "$q.data" | cut -c1-16)"
    else
      h="err:$(head -n1 "$work/err" | sed 's#'"$work"'#WORK#g' | sha256sum | cut -c1-16)"
    fi
    printf '%-40s %-24s %d %s\n' "$(basename "$m")" "$r" "$code" "$h" | tee -a "$out"
  done
done
