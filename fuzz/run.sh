#!/usr/bin/env bash
# Coverage-guided fuzzing of quantc's input readers: SharpFuzz instruments the assemblies that parse what a user hands
# quantc (the model reader and IR, the recipe and data parsers, Google.Protobuf and YamlDotNet), afl++ drives them.
#
#   fuzz/run.sh TARGET|all SECONDS        targets: model, recipe, npy, jsonl (fuzz/Quantc.Fuzz/Targets.cs)
#
# Seeds: fuzz/corpus/TARGET/ and fuzz/regressions/TARGET/ (every finding becomes a regression input, replayed by the
# tests). Findings go to .build/fuzz/findings/TARGET/. Prints one line per target (executions, crashes, hangs) and
# exits 1 when a crash was found. Installs afl++ (Debian) and the SharpFuzz tool (NuGet) when they are missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
target="${1:?usage: fuzz/run.sh TARGET|all SECONDS}"
secs="${2:?usage: fuzz/run.sh TARGET|all SECONDS}"
targets=(model recipe npy jsonl)
[ "$target" = all ] || targets=("$target")

if ! command -v afl-fuzz >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq afl++ >/dev/null
fi
tools="$here/.build/tools"
[ -x "$tools/sharpfuzz" ] || dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$tools" >/dev/null

out="$here/.build/fuzz"
rm -rf "$out/bin"
mkdir -p "$out"
dotnet build fuzz/Quantc.Fuzz -c Release -nologo -v quiet -clp:ErrorsOnly -o "$out/bin" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
for a in Quantc.Onnx Quantc.Ir Quantc.Core Quantc.Passes Google.Protobuf YamlDotNet; do
  "$tools/sharpfuzz" "$out/bin/$a.dll" >/dev/null
done

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1
export DOTNET_TieredPGO=0
status=0
for t in "${targets[@]}"; do
  seeds="$out/seeds/$t"
  rm -rf "$seeds" "$out/findings/$t"
  mkdir -p "$seeds" "$out/findings"
  cp fuzz/corpus/"$t"/* "$seeds"/
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then cp fuzz/regressions/"$t"/* "$seeds"/; fi
  afl-fuzz -V "$secs" -i "$seeds" -o "$out/findings/$t" -t 5000 -m none -- dotnet "$out/bin/quantc-fuzz.dll" afl "$t" \
    >"$out/findings/$t.log" 2>&1 || { echo "fuzz $t: afl-fuzz failed; see $out/findings/$t.log"; tail -5 "$out/findings/$t.log"; exit 1; }
  stats="$out/findings/$t/default/fuzzer_stats"
  stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  crashes="$(stat saved_crashes)"; hangs="$(stat saved_hangs)"
  echo "fuzz $t: $(stat execs_done) executions in $(stat run_time) s ($(stat execs_per_sec)/s), $(stat corpus_count) paths," \
    "$crashes crashes, $hangs hangs (over 5 s)"
  if [ "${crashes:-0}" != 0 ]; then
    status=1
    echo "  crashing inputs: $out/findings/$t/default/crashes/ (replay: dotnet $out/bin/quantc-fuzz.dll replay $t FILE)"
  fi
done
exit $status
