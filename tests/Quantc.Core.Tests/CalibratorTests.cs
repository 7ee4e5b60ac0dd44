using Quantc.Core.Calibration;
using Quantc.Ir;
using Quantc.Onnx;
using Quantc.Onnx.Proto;

namespace Quantc.Core.Tests;

public sealed class CalibratorTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-calib");

    public void Dispose() => _dir.Delete(recursive: true);

    private static TypeProto FloatType(params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(d < 0 ? new TensorShapeProto.Types.Dimension { DimParam = "n" } : new TensorShapeProto.Types.Dimension { DimValue = d });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } };
    }

    /// <summary>y = relu(x·W + b) with W [4, 3]; returns the saved path (weights as external data).</summary>
    private string BuildModel(float[] w, float[] b)
    {
        using var m = Model.Create();
        var g = m.Graph;
        var x = g.AddInput("x", FloatType(-1, 4));
        var mm = g.AddNode("MatMul", [x, g.AddInitializer(Tensor.FromFloats("W", [4, 3], w))], outputNames: ["h"]);
        var add = g.AddNode("Add", [mm.Output, g.AddInitializer(Tensor.FromFloats("b", [3], b))], outputNames: ["z"]);
        g.AddOutput(g.AddNode("Relu", [add.Output], outputNames: ["y"]).Output);
        var path = Path.Combine(_dir.FullName, "m.onnx");
        m.Save(path, new OnnxWriteOptions { ExternalDataThreshold = 16 });
        return path;
    }

    [Fact]
    public void StatisticsFromOnnxRuntimeMatchADirectComputation()
    {
        var rng = new Random(5);
        float[] w = Enumerable.Range(0, 12).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        float[] b = [0.1f, -0.2f, 0.3f];
        using var model = Model.Load(BuildModel(w, b));
        Assert.Contains(model.Graph.Initializers, v => v.Initializer!.IsExternal);

        var samples = new List<CalibrationSample>();
        var expected = new List<float>();
        for (int s = 0; s < 6; s++)
        {
            int rows = 3 + s;
            var x = Enumerable.Range(0, rows * 4).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
            var sample = new CalibrationSample();
            sample.Inputs["x"] = (x, [rows, 4]);
            samples.Add(sample);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < 3; j++)
                {
                    float acc = 0;
                    for (int k = 0; k < 4; k++) acc += x[r * 4 + k] * w[k * 3 + j];
                    expected.Add(acc + b[j]);
                }
        }
        var stats = Calibrator.Collect(model, ["z", "x"], samples, new CalibrationOptions { GroupBytes = 1 });
        var z = stats["z"];
        Assert.Equal(expected.Min(), z.Min, 5);
        Assert.Equal(expected.Max(), z.Max, 5);
        Assert.Equal(3, z.Channels);
        Assert.Equal(expected.Count / 3, z.Tokens);
        Assert.Equal(6, z.Samples);
        for (int j = 0; j < 3; j++)
            Assert.Equal(expected.Where((_, i) => i % 3 == j).Average(), z.ChannelMean[j], 4);
        Assert.Equal(4, stats["x"].Channels);
    }

    [Fact]
    public void UnknownTensorsAndNoSamplesAreBadInput()
    {
        using var model = Model.Load(BuildModel(new float[12], new float[3]));
        var sample = new CalibrationSample();
        sample.Inputs["x"] = (new float[4], [1, 4]);
        Assert.Throws<BadInputException>(() => Calibrator.Collect(model, ["nope"], [sample]));
        Assert.Throws<BadInputException>(() => Calibrator.Collect(model, ["z"], []));
    }

    private static List<CalibrationSample> Samples(int count)
    {
        var rng = new Random(3);
        var list = new List<CalibrationSample>();
        for (int s = 0; s < count; s++)
        {
            var sample = new CalibrationSample();
            sample.Inputs["x"] = (Enumerable.Range(0, 8).Select(_ => (float)rng.NextDouble()).ToArray(), [2, 4]);
            list.Add(sample);
        }
        return list;
    }

    /// <summary>
    /// One calibration path: an observer sees every sample's raw data in the same run that makes the statistics;
    /// statistics are reused while the model's revision is unchanged, and an edit (of any pass, whatever its kind) ends that.
    /// </summary>
    [Fact]
    public void ThePassContextCalibratesOncePerModelRevision()
    {
        using var model = Model.Load(BuildModel(Enumerable.Range(0, 12).Select(i => i / 12f).ToArray(), [0, 0, 0]));
        var ctx = new Quantc.Core.Pipeline.PassContext(model) { CalibrationData = Samples(3) };
        int seen = 0;
        var first = ctx.Calibrate(["z"], "test", (name, data, channels) => { Assert.Equal(("z", 3), (name, channels)); Interlocked.Add(ref seen, data.Length); });
        Assert.Equal(3 * 2 * 3, seen);
        Assert.Equal(6, first["z"].Tokens);
        ctx.CalibrationData = null; // from here on, only the cache can answer
        Assert.Same(first["z"], ctx.Calibrate(["z"], "test")["z"]);
        Assert.True(ctx.CanCalibrate(["z"]) is false); // no data, no saved statistics
        long revision = model.Revision;
        model.Graph.SetInitializer(model.Graph["b"], Tensor.FromFloats("b", [3], [1, 1, 1]));
        Assert.True(model.Revision > revision);
        var e = Assert.Throws<BadInputException>(() => ctx.Calibrate(["z"], "test"));
        Assert.Contains("needs calibration data", e.Message);
    }

    [Fact]
    public void SavedStatisticsAnswerUntilTheModelIsEdited()
    {
        using var model = Model.Load(BuildModel(new float[12], new float[3]));
        var saved = Calibrator.Collect(model, ["z"], Samples(2));
        var ctx = new Quantc.Core.Pipeline.PassContext(model) { SavedStatistics = saved };
        Assert.True(ctx.CanCalibrate(["z"]));
        Assert.Same(saved["z"], ctx.Calibrate(["z"], "test")["z"]);
        Assert.Equal(1, ctx.StatisticsReused);
        _ = model.Graph.Nodes.ToList(); // reading is not an edit
        Assert.NotNull(ctx.SavedStatistics);
        model.Graph.Nodes[0].SetAttribute("note", 1L);
        Assert.Null(ctx.SavedStatistics);
        Assert.Throws<BadInputException>(() => ctx.Calibrate(["z"], "test"));
    }

    /// <summary>
    /// A rewritten model whose inline tensors pass the limit (a large model after a pass, whose protobuf would pass
    /// 2 GiB) is opened from a temporary copy with external data: the same results, and nothing left in the temp folder.
    /// </summary>
    [Fact]
    public void LargeRewrittenModelsOpenFromATemporaryCopy()
    {
        using var model = Model.Load(BuildModel(Enumerable.Range(0, 12).Select(i => i / 7f).ToArray(), [0.5f, -1, 2]));
        model.Graph.SetInitializer(model.Graph["b"], Tensor.FromFloats("b", [3], [1, 2, 3]));   // a new tensor, as a pass makes
        var samples = Samples(2);
        var inMemory = Calibrator.Collect(model, ["z", "y"], samples);
        // this process's session folders only: other processes on the machine (a compile beside the tests) make their own
        string mine = $"quantc-session-{Environment.ProcessId}-*";
        var before = Directory.GetDirectories(Path.GetTempPath(), mine).Length;
        long limit = Quantc.Core.Runtime.OrtModel.InlineLimitBytes;
        try
        {
            Quantc.Core.Runtime.OrtModel.InlineLimitBytes = 0;
            var fromFile = Calibrator.Collect(model, ["z", "y"], samples);
            foreach (var t in new[] { "z", "y" })
            {
                Assert.Equal(inMemory[t].ChannelMin.ToArray(), fromFile[t].ChannelMin.ToArray());
                Assert.Equal(inMemory[t].ChannelMax.ToArray(), fromFile[t].ChannelMax.ToArray());
            }
        }
        finally
        {
            Quantc.Core.Runtime.OrtModel.InlineLimitBytes = limit;
        }
        Assert.Equal(before, Directory.GetDirectories(Path.GetTempPath(), mine).Length);
    }

    [Fact]
    public void AGraphInputAskedForAsAnOutputOutlivesTheInputsFedToTheRun()
    {
        // ONNX Runtime returns a graph input asked for as an output as the very buffer it was fed. The calibration folds outputs
        // after it disposes the run's inputs (pipelined with the next run): the buffer must not be the sample's array, which the
        // garbage collector may move once it is unpinned (CI crashed in the folding of a calibrated first-layer input).
        using var model = Model.Load(BuildModel(new float[12], new float[3]));
        var x = new float[] { 1, -2, 3, -4, 5, -6, 7, -8 };
        var sample = new CalibrationSample();
        sample.Inputs["x"] = (x, [2, 4]);
        using var session = Quantc.Core.Runtime.OrtModel.CreateSession(model, ["x"]);
        var inputs = CalibrationInputs.ToOrt(sample);
        var outputs = Quantc.Core.Runtime.OrtModel.Run(session, inputs, ["x"], "model");
        foreach (var (_, v) in inputs) v.Dispose();
        x[0] = 99;      // the sample's array is not the output's buffer
        using (outputs) Assert.Equal([1f, -2, 3, -4, 5, -6, 7, -8], outputs[0].GetTensorDataAsSpan<float>().ToArray());

        var stats = Calibrator.Collect(model, ["x", "z"], [sample, sample, sample]);
        Assert.Equal((-8f, 99f), (stats["x"].Min, stats["x"].Max));
    }

    [Fact]
    public void GroupsCountActivationsByTheTokenInputNotByARecurrentStateFedBesideIt()
    {
        // A Mamba-like model: input_ids [batch_size, sequence_length] and an SSM state [batch_size, 1024, 16] per layer. Each calibration
        // group is one more run of the model over the data; counting unknown dimensions as the state's 16,384 elements made every
        // tensor 256 MiB, and the small mamba's quamba compile ran its model 27 times.
        using var m = Model.Create();
        var g = m.Graph;
        var ids = g.AddInput("input_ids", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 7, Shape = Dims("batch_size",
            "sequence_length") } });
        var state = g.AddInput("state", new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = Dims("batch_size",
            1024L, 16L) } });
        var cast = g.AddNode("Cast", [ids], outputNames: ["h0"]);
        cast.SetAttribute("to", 1L);
        var h = cast.Output;
        var names = new List<string>();
        for (int i = 0; i < 20; i++) { h = g.AddNode("Relu", [h], outputNames: [$"t{i}"]).Output; names.Add(h.Name); }
        var typed = g.AddNode("Relu", [state], outputNames: ["typed"]).Output;
        typed.Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = Dims("batch_size", "sequence_length",
            64L) } };
        g.AddOutput(h);
        var sample = new CalibrationSample();
        sample.Inputs["input_ids"] = (new long[512], [1, 512]);
        sample.Inputs["state"] = (new float[1024 * 16], [1, 1024, 16]);

        // Unknown shapes: 512 tokens × 4096 × 4 B = 8 MiB each, all 20 in one 1 GiB group (was 256 MiB each, 5 groups).
        Assert.Single(Calibrator.Group(m, names, [sample], 1L << 30));
        // Named dimensions take the samples' sizes: [1, 512, 64] floats = 128 KiB; two fit 256 KiB, a third does not.
        var groups = Calibrator.Group(m, ["typed", "typed", "typed"], [sample], 256 << 10);
        Assert.Equal([2, 1], groups.Select(x => x.Count));
    }

    private static TensorShapeProto Dims(params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d is string p ? new TensorShapeProto.Types.Dimension { DimParam = p }
                : new TensorShapeProto.Types.Dimension { DimValue = (long)d });
        return shape;
    }
}
