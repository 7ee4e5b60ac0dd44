#!/usr/bin/env bash
# quantc compile MODEL --recipe w8a8 --calib random over every model of ONNX's backend-test corpus
# (/usr/share/libonnx-testdata/data) with a MatMul, Gemm or Conv: a markdown table of outcomes (compiled and
# verified / refused with a reason / failed) on stdout, one line per model on stderr. Exit 1 when any failed.
# Usage: bench/corpus-w8a8.sh [--filter TEXT]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dotnet build "$here/Quantc.Bench.Vision/Quantc.Bench.Vision.csproj" -c Release -nologo -v quiet -clp:ErrorsOnly >&2
exec dotnet "$here/Quantc.Bench.Vision/bin/Release/net10.0/linux-x64/Quantc.Bench.Vision.dll" corpus "$@"
