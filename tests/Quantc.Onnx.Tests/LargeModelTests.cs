using Microsoft.ML.OnnxRuntime;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using Xunit.Abstractions;

namespace Quantc.Onnx.Tests;

/// <summary>
/// A model over 2 GB: generated on the fly from a sparse file (no 2 GB in memory), written with the
/// size threshold off so that only the writer's 2 GB rule can move the big tensor to external data
/// (with default options the 1 MiB threshold would move it anyway), reloaded, sampled and run.
/// </summary>
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
            var gathered = g.AddNode("Gather", [table, idx]);
            // A 2 MiB tensor too: over the default threshold, but with the threshold off it stays inline.
            var bias = g.AddInitializer(Tensor.FromFloats("bias", [1 << 19, 1], Enumerable.Range(0, 1 << 19).Select(i => (float)i).ToArray()));
            var bidx = g.AddInput("bidx", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 7 } });
            var biasRows = g.AddNode("Gather", [bias, bidx]);                                   // [3, 1]
            g.AddOutput(g.AddNode("Add", [gathered.Output, biasRows.Output], outputNames: ["y"]).Output); // [3, 4]
            // The proto would pass 2 GB: the biggest tensor must go external, and only it.
            var r = m.Save(Path.Combine(_dir.FullName, "big.onnx"), new OnnxWriteOptions { ExternalDataThreshold = long.MaxValue });
            Assert.Equal(1, r.ExternalTensors);
            Assert.Equal(bytes, r.ExternalBytes);
        }
        Assert.InRange(new FileInfo(Path.Combine(_dir.FullName, "big.onnx")).Length, 2 << 20, (2 << 20) + 4096);
        Assert.Equal(bytes, new FileInfo(Path.Combine(_dir.FullName, "big.onnx.data")).Length);
        using (var back = Model.Load(Path.Combine(_dir.FullName, "big.onnx")))
        {
            var t = back.Graph["table"].Initializer!;
            Assert.True(t.IsExternal);
            Assert.Equal(new long[] { rows, cols }, t.Dims);
            Assert.Equal(77_777_777 % 1000 + 2f, BitConverter.ToSingle(t.Data.Slice(77_777_777 * cols * 4 + 8, 4)));
            Assert.Equal((rows - 1) % 1000 + 3f, BitConverter.ToSingle(t.Data.Slice(bytes - 4, 4)));
            Assert.True(t.Data.Slice(1L << 31, 4096).IndexOfAnyExcept((byte)0) < 0); // past 2 GiB: the zeros of the sparse source
            Assert.False(back.Graph["bias"].Initializer!.IsExternal);
            Assert.Equal(12345f, back.Graph["bias"].Initializer!.ToFloat32()[12345]);
        }
        log.WriteLine($"saved and reloaded {bytes >> 20} MiB; peak RSS so far {PeakRssMiB()} MiB");
        // ONNX Runtime maps aligned external initializers (peak RSS ≈ 150 MiB measured here), but it may
        // copy them where it cannot map: run it only where the machine would have room for a copy.
        long available = AvailableMemoryBytes();
        if (available < bytes + (1L << 30))
        {
            log.WriteLine($"ONNX Runtime run SKIPPED: {available >> 20} MiB of memory available, need {(bytes + (1L << 30)) >> 20} MiB");
            return;
        }
        using var session = new InferenceSession(Path.Combine(_dir.FullName, "big.onnx"));
        using var iv = OrtValue.CreateTensorValueFromMemory(new long[] { 0, 77_777_777, rows - 1 }, [3]);
        using var bv = OrtValue.CreateTensorValueFromMemory(new long[] { 0, 0, 1000 }, [3]);
        using var ro = new RunOptions();
        using var o = session.Run(ro, ["idx", "bidx"], [iv, bv], ["y"]);
        var y = o[0].GetTensorDataAsSpan<float>().ToArray();
        log.WriteLine($"ran in ONNX Runtime; peak RSS {PeakRssMiB()} MiB");
        Assert.Equal(new float[] { 0, 1, 2, 3, 777, 778, 779, 780, (rows - 1) % 1000 + 1000, (rows - 1) % 1000 + 1001, (rows - 1) % 1000 + 1002, (rows - 1) % 1000 + 1003 }, y);
    }

    private static long PeakRssMiB() =>
        long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)).Split(':')[1].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) >> 10;

    private static long AvailableMemoryBytes()
    {
        var line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
        long kib = line is null ? 0 : long.Parse(line.Split(':')[1].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        return Math.Min(kib * 1024, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes); // the smaller of the machine's and a container limit's
    }
}
