using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using Xunit.Abstractions;

namespace Quantc.Onnx.Tests;

/// <summary>A model over 2 GB: generated on the fly from a sparse file (no 2 GB in memory), written with default options (external data chosen automatically), reloaded and run.</summary>
public sealed class LargeModelTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-large");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    [Trait("Category", "Large")]
    public void AModelOverTwoGigabytesIsWrittenReloadedAndRun()
    {
        const long rows = 150_000_000, cols = 4;              // 2.4 GB of float32
        long bytes = rows * cols * 4;
        long free = new DriveInfo(_dir.FullName).AvailableFreeSpace;
        if (free < 3 * bytes)
        {
            log.WriteLine($"SKIPPED: {free >> 20} MiB free in {_dir.FullName}, need {3 * bytes >> 20} MiB");
            return;
        }
        // Source bytes: a sparse file (reads as zeros) with a few rows written, mapped lazily.
        string src = Path.Combine(_dir.FullName, "source.bin");
        using (var fs = new FileStream(src, FileMode.CreateNew))
        {
            fs.SetLength(bytes);
            foreach (long r in new long[] { 0, 77_777_777, rows - 1 })
            {
                fs.Position = r * cols * 4;
                for (int c = 0; c < cols; c++) fs.Write(BitConverter.GetBytes((float)(r % 1000 + c)));
            }
        }
        using var mapped = new MappedFile(src);
        using (var m = Model.Create(opset: 21))
        {
            var g = m.Graph;
            var idx = g.AddInput("idx", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 7 } });
            var table = g.AddInitializer(Tensor.FromData("table", 1, [rows, cols], new MappedTensorData(mapped, 0, bytes)));
            g.AddOutput(g.AddNode("Gather", [table, idx], outputNames: ["y"]).Output);
            // Default options: a 2.4 GB tensor is over the 1 MiB threshold; even with the threshold off,
            // the proto would pass 2 GB, so it must go external.
            var r = m.Save(Path.Combine(_dir.FullName, "big.onnx"), new OnnxWriteOptions { ExternalDataThreshold = long.MaxValue });
            Assert.Equal(1, r.ExternalTensors);
            Assert.Equal(bytes, r.ExternalBytes);
        }
        Assert.True(new FileInfo(Path.Combine(_dir.FullName, "big.onnx")).Length < 4096);
        using (var back = Model.Load(Path.Combine(_dir.FullName, "big.onnx")))
        {
            var t = back.Graph["table"].Initializer!;
            Assert.True(t.IsExternal);
            Assert.Equal(new long[] { rows, cols }, t.Dims);
            Assert.Equal(77_777_777 % 1000 + 2f, BitConverter.ToSingle(t.Data.Slice(77_777_777 * cols * 4 + 8, 4)));
        }
        using var session = new InferenceSession(Path.Combine(_dir.FullName, "big.onnx"));
        using var iv = OrtValue.CreateTensorValueFromMemory(new long[] { 0, 77_777_777, rows - 1 }, [3]);
        using var ro = new RunOptions();
        using var o = session.Run(ro, ["idx"], [iv], ["y"]);
        var y = o[0].GetTensorDataAsSpan<float>().ToArray();
        Assert.Equal(new float[] { 0, 1, 2, 3, 777, 778, 779, 780, (rows - 1) % 1000, (rows - 1) % 1000 + 1, (rows - 1) % 1000 + 2, (rows - 1) % 1000 + 3 }, y);
    }
}
