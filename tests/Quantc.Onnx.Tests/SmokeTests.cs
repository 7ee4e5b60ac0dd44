using Quantc.Ir;
using Quantc.Onnx;

namespace Quantc.Onnx.Tests;

public class SmokeTests
{
    [Fact]
    public void ConformanceModelRoundTripsByteIdentical()
    {
        var files = Directory.GetFiles("/usr/share/libonnx-testdata/data", "model.onnx", SearchOption.AllDirectories);
        var dir = Directory.CreateTempSubdirectory("quantc-smoke");
        var fails = new List<string>();
        foreach (var path in files)
        {
            try
            {
                using var m = Model.Load(path);
                m.Graph.Validate();
                var outPath = Path.Combine(dir.FullName, "m.onnx");
                m.Save(outPath);
                if (!File.ReadAllBytes(path).AsSpan().SequenceEqual(File.ReadAllBytes(outPath))) fails.Add(path + ": differs");
            }
            catch (Exception e) { fails.Add(path + ": " + e.GetType().Name + " " + e.Message); }
        }
        File.WriteAllLines("/tmp/smoke-fails.txt", fails);
        Assert.Empty(fails);
    }
}
