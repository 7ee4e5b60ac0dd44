using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Quantc.Ir;
using Quantc.Onnx.Proto;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Quantc.Onnx.Tests;

/// <summary>
/// ONNX's own backend-test corpus (Debian's libonnx-testdata, 1,072 models), one test case per
/// model: every model loads into the IR and saves back byte-identical; every model ONNX Runtime
/// loads still loads after our round trip, and each bundled test data set gives, on our re-saved
/// file, the bundled outputs (ONNX's backend tolerance, rtol 1e-3 / atol 1e-7) and bit for bit
/// what ONNX Runtime gives on the original file.
/// </summary>
public sealed class ConformanceCorpusTests(ConformanceCorpusTests.Tally tally, ITestOutputHelper log) : IClassFixture<ConformanceCorpusTests.Tally>
{
    public const string Corpus = "/usr/share/libonnx-testdata/data";
    private const string Missing = "(libonnx-testdata is not installed)";
    private const string InstallIt = Corpus + " is missing: install Debian's libonnx-testdata (sudo apt-get install libonnx-testdata; ./test and .ci/run do it)";

    /// <summary>Every corpus model, as a path relative to <see cref="Corpus"/> (its folder), sorted.</summary>
    public static List<string> ModelNames() =>
        Directory.Exists(Corpus)
            ? Directory.GetFiles(Corpus, "model.onnx", SearchOption.AllDirectories)
                .Select(p => Path.GetRelativePath(Corpus, Path.GetDirectoryName(p)!)).Order(StringComparer.Ordinal).ToList()
            : [];

    public static TheoryData<string> Models()
    {
        var names = ModelNames();
        // A missing corpus must fail, not pass with zero cases: one case that says what to install.
        return names.Count == 0 ? new TheoryData<string>(Missing) : new TheoryData<string>(names);
    }

    private static string PathOf(string model)
    {
        Assert.True(model != Missing && Directory.Exists(Corpus), InstallIt);
        return Path.Combine(Corpus, model, "model.onnx");
    }

    [Fact]
    public void TheWholeCorpusIsThere()
    {
        Assert.True(Directory.Exists(Corpus), InstallIt);
        int n = ModelNames().Count;
        Assert.True(n >= 1000, $"expected ONNX's whole backend-test corpus (1,072 models) under {Corpus}, found {n}");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void RoundTripsByteIdentical(string model)
    {
        string path = PathOf(model);
        string saved = Path.Combine(tally.Folder, "rt-" + model.Replace('/', '_') + ".onnx");
        try
        {
            using (var m = Model.Load(path))
            {
                m.Graph.Validate();
                m.Save(saved);
            }
            Assert.True(File.ReadAllBytes(path).AsSpan().SequenceEqual(File.ReadAllBytes(saved)), $"{model}: the re-saved file differs from the original");
            Assert.Empty(Directory.GetFiles(tally.Folder, ".*")); // no temporaries left behind
            tally.Add(ref tally.RoundTripped);
        }
        finally
        {
            File.Delete(saved);
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GivesTheBundledOutputsAfterOurRoundTrip(string model)
    {
        tally.Add(ref tally.Visited);
        Check(model, tally);
    }

    /// <summary>
    /// Models ONNX Runtime runs (plain ops, a Loop, an If, a Scan, QDQ): these must really run and match,
    /// not be skipped — so that a broken ONNX Runtime cannot turn the corpus test into 1,072 skips.
    /// </summary>
    [Theory]
    [InlineData("node/test_abs")]
    [InlineData("node/test_conv_with_strides_padding")]
    [InlineData("node/test_matmul_2d")]
    [InlineData("node/test_gemm_all_attributes")]
    [InlineData("pytorch-converted/test_Conv2d")]
    [InlineData("node/test_loop11")]
    [InlineData("node/test_if")]
    [InlineData("node/test_scan9_sum")]
    [InlineData("node/test_cast_FLOAT_to_FLOAT16")]
    [InlineData("node/test_quantizelinear")]
    [InlineData("node/test_dequantizelinear")]
    [InlineData("node/test_layer_normalization_2d_axis0")]
    public void KnownGoodModelsReallyRun(string model)
    {
        var counts = new Tally(null);
        try
        {
            Check(model, counts);
            Assert.True(counts.OrtLoaded == 1 && counts.MatchedSets >= 1 && counts.MatchedSets == Directory.GetDirectories(Path.Combine(Corpus, model), "test_data_set_*").Length,
                $"{model} was expected to run in ONNX Runtime and match every data set: " + counts.Summary());
        }
        finally
        {
            counts.Dispose();
        }
    }

    private void Check(string model, Tally counts)
    {
        string path = PathOf(model);
        var dataSets = Directory.GetDirectories(Path.GetDirectoryName(path)!, "test_data_set_*").Order(StringComparer.Ordinal).ToList();
        if (dataSets.Count == 0)
        {
            counts.Add(ref counts.NoDataSets);
            log.WriteLine("no test data sets");
            return;
        }

        using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        InferenceSession original;
        try { original = new InferenceSession(path, so); }
        catch (OnnxRuntimeException e)
        {
            counts.Add(ref counts.OrtRefusesOriginal);
            log.WriteLine($"skipped: ONNX Runtime does not load the original file either: {FirstLine(e.Message)}");
            return;
        }
        using var originalSession = original;

        string saved = Path.Combine(counts.Folder, "ort-" + model.Replace('/', '_') + ".onnx");
        try
        {
            using (var m = Model.Load(path)) m.Save(saved);
            // ONNX Runtime loaded the original: it must load ours. Any exception here fails the test.
            using var session = new InferenceSession(saved, so);
            counts.Add(ref counts.OrtLoaded);
            Assert.Equal(originalSession.InputNames, session.InputNames);
            Assert.Equal(originalSession.OutputNames, session.OutputNames);
            foreach (var set in dataSets) RunDataSet(model, set, originalSession, session, counts);
        }
        finally
        {
            File.Delete(saved);
        }
    }

    private void RunDataSet(string model, string set, InferenceSession originalSession, InferenceSession session, Tally counts)
    {
        string name = Path.GetFileName(set);
        static int Index(string f, string prefix) => int.Parse(Path.GetFileNameWithoutExtension(f)[prefix.Length..], System.Globalization.CultureInfo.InvariantCulture);
        var inputs = Directory.GetFiles(set, "input_*.pb").OrderBy(f => Index(f, "input_")).Select(TryTensor).ToList();
        var outputs = Directory.GetFiles(set, "output_*.pb").OrderBy(f => Index(f, "output_")).Select(TryTensor).ToList();
        if (inputs.Any(t => t is null) || outputs.Any(t => t is null) || outputs.Count == 0 ||
            inputs.Count != session.InputNames.Count || outputs.Count > session.OutputNames.Count)
        {
            counts.Add(ref counts.UnsupportedSets);
            log.WriteLine($"{name}: skipped: its inputs or outputs are not plain numeric tensors (sequence, map, optional, string) or do not match the graph's");
            return;
        }
        var values = inputs.Select(t => OrtTensors.ToOrt(t!)).ToList();
        try
        {
            if (values.Any(v => v is null))
            {
                counts.Add(ref counts.UnsupportedSets);
                log.WriteLine($"{name}: skipped: an input type ONNX Runtime's C# API cannot hold");
                return;
            }
            var inNames = session.InputNames.ToList();
            var outNames = session.OutputNames.Take(outputs.Count).ToList();
            using var ro = new RunOptions();
            IDisposableReadOnlyCollection<OrtValue> reference;
            try { reference = originalSession.Run(ro, inNames, values!, outNames); }
            catch (OnnxRuntimeException e)
            {
                counts.Add(ref counts.OrtFailsOnOriginal);
                log.WriteLine($"{name}: skipped: ONNX Runtime fails to run the original file: {FirstLine(e.Message)}");
                return;
            }
            using var referenceResults = reference;
            using var results = session.Run(ro, inNames, values!, outNames); // must run: it ran on the original
            bool ortDeviates = false, nondeterministic = false;
            for (int i = 0; i < outputs.Count; i++)
            {
                if (reference[i].OnnxType != OnnxValueType.ONNX_TYPE_TENSOR)
                {
                    ortDeviates = true; // a bundled tensor read from a non-tensor output: nothing to compare
                    continue;
                }
                // Our file is the original's bytes: ONNX Runtime must give the very same bits on both,
                // unless the model itself is random (RandomNormal, Bernoulli…), which a second run of the original shows.
                if (!SameBits(reference[i], results[i]))
                {
                    using var again = originalSession.Run(ro, inNames, values!, outNames);
                    Assert.False(SameBits(reference[i], again[i]), $"{model}/{name}: output {i} ({outNames[i]}) differs bitwise from ONNX Runtime's on the original file");
                    nondeterministic = true;
                }
                var want = OrtTensors.AsDoubles(outputs[i]!.DataType, TensorBytes.InlineBytes(outputs[i]!).Span, TensorBytes.ElementCount(outputs[i]!));
                var orig = OrtTensors.AsDoubles(reference[i], out _);
                var got = OrtTensors.AsDoubles(results[i], out _);
                // ONNX Runtime disagreeing with the bundled outputs on the original file (its own deviations,
                // random ops) says nothing about our round trip.
                if (!Close(want, orig)) { ortDeviates = true; continue; }
                if (!nondeterministic) Assert.True(Close(want, got), $"{model}/{name}: output {i} ({outNames[i]}) differs from the bundled output after our round trip");
            }
            if (ortDeviates)
            {
                counts.Add(ref counts.OrtDeviatesOnOriginal);
                log.WriteLine($"{name}: ONNX Runtime on the original file already disagrees with the bundled outputs; ours gives ORT's bits");
            }
            else if (nondeterministic)
            {
                counts.Add(ref counts.Nondeterministic);
                log.WriteLine($"{name}: the model is random (two runs of the original differ); compared with tolerance only");
            }
            else
            {
                counts.Add(ref counts.MatchedSets);
                log.WriteLine($"{name}: matches the bundled outputs and ONNX Runtime's bits on the original");
            }
        }
        finally
        {
            foreach (var v in values) v?.Dispose();
        }
    }

    private static bool SameBits(OrtValue a, OrtValue b)
    {
        var ia = a.GetTensorTypeAndShape();
        var ib = b.GetTensorTypeAndShape();
        if (ia.ElementDataType != ib.ElementDataType || !ia.Shape.SequenceEqual(ib.Shape)) return false;
        if (ia.ElementDataType == TensorElementType.String) return a.GetStringTensorAsArray().SequenceEqual(b.GetStringTensorAsArray());
        return a.GetTensorDataAsSpan<byte>().SequenceEqual(b.GetTensorDataAsSpan<byte>());
    }

    /// <summary>ONNX's backend-test comparison (numpy.testing.assert_allclose with rtol 1e-3, atol 1e-7; NaN equals NaN).</summary>
    private static bool Close(double[] want, double[] got)
    {
        if (want.Length != got.Length) return false;
        for (int k = 0; k < want.Length; k++)
            if (!((double.IsNaN(want[k]) && double.IsNaN(got[k])) || want[k] == got[k] || Math.Abs(want[k] - got[k]) <= 1e-7 + 1e-3 * Math.Abs(want[k])))
                return false;
        return true;
    }

    /// <summary>A bundled .pb as a plain numeric TensorProto, or null (sequence, map, optional, string).</summary>
    internal static TensorProto? TryTensor(string path)
    {
        try
        {
            var t = TensorProto.Parser.ParseFrom(File.ReadAllBytes(path));
            if (!t.HasDataType || t.DataType == 0 || t.DataType == (int)TensorProto.Types.DataType.String || DataTypes.BitsOf(t.DataType) == 0) return null;
            // A SequenceProto, MapProto or OptionalProto can parse as a TensorProto with nonsense fields: check the sizes agree.
            if (t.Dims.Any(d => d < 0) || t.DataLocation == TensorProto.Types.DataLocation.External) return null;
            long count = TensorBytes.ElementCount(t);
            return count < (1L << 28) && TensorBytes.InlineBytes(t).Length == DataTypes.ByteSize(t.DataType, count) ? t : null;
        }
        catch (Exception e) when (e is Google.Protobuf.InvalidProtocolBufferException or BadInputException or OverflowException or ArgumentException or InvalidOperationException)
        {
            return null;
        }
    }

    private static string FirstLine(string s)
    {
        int i = s.IndexOf('\n');
        return (i < 0 ? s : s[..i]).Trim();
    }

    /// <summary>
    /// Counts of what the per-model cases did, shared by the class's cases. When every corpus model has
    /// been through the ONNX Runtime case (no filter), it reports the counts and checks that most of
    /// the corpus really ran — a run that skipped everything must not pass (xunit reports a failing
    /// check here as a class cleanup failure, and the test run exits non-zero).
    /// </summary>
    public sealed class Tally(IMessageSink? sink) : IDisposable
    {
        private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-corpus");
        public string Folder => _dir.FullName;

        public int RoundTripped, Visited, NoDataSets, OrtRefusesOriginal, OrtLoaded, MatchedSets, OrtDeviatesOnOriginal, Nondeterministic, UnsupportedSets, OrtFailsOnOriginal;

        public void Add(ref int counter) => Interlocked.Increment(ref counter);

        public string Summary() =>
            $"ONNX conformance corpus: {RoundTripped} models round-tripped byte-identical; of {Visited} models, {OrtLoaded} loaded by ONNX Runtime " +
            $"before and after our round trip, {MatchedSets} test data sets matched the bundled outputs (rtol 1e-3, atol 1e-7) and ORT's bits on the original; " +
            $"skipped: {OrtRefusesOriginal} models ONNX Runtime does not load even as originals, {NoDataSets} models without test data, " +
            $"{UnsupportedSets} data sets with sequence/map/optional/string data, {OrtFailsOnOriginal} data sets ORT cannot run on the original, " +
            $"{OrtDeviatesOnOriginal} data sets where ORT on the original already disagrees with the bundled outputs, {Nondeterministic} random-op data sets";

        public void Dispose()
        {
            _dir.Delete(recursive: true);
            if (Visited == 0) return;
            if (sink is null) return;
            sink.OnMessage(new DiagnosticMessage(Summary()));
            if (Visited < ModelNames().Count) return; // a filtered run: no corpus-wide expectations
            Assert.True(OrtLoaded >= 900 && MatchedSets >= 900, "too little of the corpus ran in ONNX Runtime: " + Summary());
        }
    }
}
