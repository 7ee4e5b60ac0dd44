# Shared by run.sh and kv.sh (sourced; needs root, model, calib, eval, out, seq set).
q() { QUANTC_NO_BUILD=1 "$root/quantc" "$@"; }
mkdir -p "$out"
for t in tokenizer.model tokenizer.json; do [ -f "$(dirname "$model")/$t" ] && cp "$(dirname "$model")/$t" "$out/"; done
row() {  # name reference verify.json third-column
    python3 - "$@" <<'PY'
import json, sys
r, ref, path, prefix = sys.argv[1:5]
d = json.load(open(path)); lg = next(o for o in d["outputs"] if o["name"] == "logits"); l = d["logits"]
print(f"| {r} | {prefix} | {ref} | {lg['sqnr_db']:.2f} | {100 * l['top1_agreement']:.1f} % | "
      f"{l['perplexity_original']:.3f} → {l['perplexity_compiled']:.3f} |")
PY
}
# plain NAME RECIPE: compiled on text with BOS, verified against the original; writes $out/NAME.verify.json.
plain() {
    q compile "$model" --recipe "$2" --calib "$calib" --seq-len "$seq" -o "$out/$1.onnx" --force --no-verify \
        --report "$out/$1.report.json" > "$out/$1.log" 2>&1
    q verify "$model" "$out/$1.onnx" --data "$eval" --seq-len "$seq" --json --no-layers > "$out/$1.verify.json" 2>> "$out/$1.log" || true
}
# compile_prefixed NAME RECIPE: compiled on text without BOS into $out/NAME.onnx, and its reference $out/ref-NAME.onnx: the float
# model with the prefix it found (prefix_tokens alone, i.e. the original on [prefix, x]); sets tokens.
compile_prefixed() {
    q compile "$model" --recipe "$2" --calib "$calib" --seq-len "$seq" --no-bos -o "$out/$1.onnx" --force --no-verify \
        --report "$out/$1.report.json" > "$out/$1.log" 2>&1
    tokens=$(python3 -c "import json, sys
log = json.load(open(sys.argv[1]))['log']
print(next(l for l in log if ' prefix tokens [' in l).split('[')[1].split(']')[0])" "$out/$1.report.json")
    printf 'name: float-prefix\npasses:\n  - prefix_tokens: { tokens: [%s] }\n' "$tokens" > "$out/ref-$1.yaml"
    q compile "$model" --recipe "$out/ref-$1.yaml" -o "$out/ref-$1.onnx" --force --no-verify > "$out/ref-$1.log" 2>&1
}
# prefixed NAME RECIPE: compile_prefixed, then verified against that reference on $eval; writes $out/NAME.verify.json.
prefixed() {
    compile_prefixed "$1" "$2"
    q verify "$out/ref-$1.onnx" "$out/$1.onnx" --data "$eval" --seq-len "$seq" --no-bos --json --no-layers > "$out/$1.verify.json" \
        2>> "$out/$1.log" || true
}
