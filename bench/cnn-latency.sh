#!/usr/bin/env bash
# fp32 vs w8a8 (QLinearConv) vs w8a8-dynamic (ConvInteger) latency of a ResNet-18-width CNN (Quantc.Models.VisionGraphs "resnet-wide", seeded random weights, built here,
# nothing downloaded) in ONNX Runtime CPU: export at SIZE² (default 224), quantc compile --recipe w8a8 / w8a8-dynamic --calib random,
# then the bench's interleaved latency rounds at 1 thread and at the ORT default. Prints markdown tables.
# Usage: bench/cnn-latency.sh [SIZE] [ROUNDS]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
size="${1:-224}"; rounds="${2:-10}"
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
dotnet build "$here/Quantc.Bench.Vision/Quantc.Bench.Vision.csproj" -c Release -nologo -v quiet -clp:ErrorsOnly >&2
bench=(dotnet "$here/Quantc.Bench.Vision/bin/Release/net10.0/linux-x64/Quantc.Bench.Vision.dll")
"${bench[@]}" export resnet-wide "$dir/resnet-wide.fp32.onnx" --size "$size" >&2
for r in w8a8 w8a8-dynamic; do
  "$here/../quantc" compile "$dir/resnet-wide.fp32.onnx" --recipe "$r" --calib random -o "$dir/resnet-wide.$r.onnx" >&2
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); flags: $(grep -o 'avx512_vnni\|avx2' /proc/cpuinfo | sort -u | xargs)"
echo "image ${size}x${size}, batch 1"
"${bench[@]}" latency "$dir/resnet-wide.fp32.onnx" "$dir/resnet-wide.w8a8.onnx" "$dir/resnet-wide.w8a8-dynamic.onnx" --rounds "$rounds" --threads 1
"${bench[@]}" latency "$dir/resnet-wide.fp32.onnx" "$dir/resnet-wide.w8a8.onnx" "$dir/resnet-wide.w8a8-dynamic.onnx" --rounds "$rounds"
