using Quantc.Core.IO;
using Quantc.Onnx;

namespace Quantc.Cli.Tests;

/// <summary>
/// The output policy through the CLI: no output may replace an input (however the path is spelled),
/// a device, a folder or a file quantc did not write; every input is checked before anything is
/// written; a refused run exits 2 with one line on stderr and leaves the folder exactly as it was.
/// </summary>
public sealed class OutputPolicyTests() : FolderTest("quantc-out")
{
    /// <summary>The bundled tiny llama copied into the test folder (the input every case protects).</summary>
    private string Input(string name = "m.onnx")
    {
        File.Copy(Cli.DefaultModelPath(), P(name));
        return P(name);
    }

    private static readonly string[] Fast = ["--recipe", "w8a8", "--no-verify", "--samples", "1", "--seq-len", "16"];

    private static string[] Compile(params string[] args) => ["compile", .. args, .. Fast];

    [Fact]
    public void OutputEqualToTheInputIsRefusedHoweverItIsSpelled()
    {
        string m = Input();
        Directory.CreateDirectory(P("sub"));
        File.CreateSymbolicLink(P("link.onnx"), m);
        Assert.Contains("is the input", Refused(Compile(m, "-o", m)));
        Assert.Contains("is the input", Refused(Compile(m, "-o", Path.Combine(Dir.FullName, "sub", "..", "m.onnx"))));
        Assert.Contains("symbolic link", Refused(Compile(m, "-o", P("link.onnx"))));
        // A link to the folder: the resolved path is still the input.
        File.CreateSymbolicLink(P("dirlink"), Dir.FullName);
        Assert.Contains("is the input", Refused(Compile(m, "-o", Path.Combine(P("dirlink"), "m.onnx"))));
    }

    [Fact]
    public void AnOutputsExternalDataMayNotReplaceTheInputsData()
    {
        // The input keeps its weights in q.onnx.data, which is where "-o q.onnx" would put its own.
        using (var m = Quantc.Ir.Model.Load(Cli.DefaultModelPath()))
            m.Save(P("a.onnx"), new OnnxWriteOptions { ExternalDataThreshold = 1024, ExternalDataFileName = "q.onnx.data" });
        Assert.True(File.Exists(P("q.onnx.data")));
        Assert.Contains("would replace the input", Refused(Compile(P("a.onnx"), "-o", P("q.onnx"))));
        Assert.Contains("is the input", Refused(Compile(P("a.onnx"), "-o", P("b.onnx"), "--report", P("q.onnx.data"))));
    }

    [Fact]
    public void ReportsAndPagesNeverReplaceInputsOrEachOther()
    {
        string m = Input();
        Assert.Contains("is the input", Refused(Compile(m, "-o", P("q.onnx"), "--report", m)));
        Assert.Contains("same file as --output", Refused(Compile(m, "-o", P("q.onnx"), "--report", P("q.onnx"))));
        Assert.Contains("same file as --report", Refused(Compile(m, "-o", P("q.onnx"), "--report", P("r.json"), "--html", P("r.json"))));
        Assert.Contains("is the input", Refused(Compile(m, "-o", P("q.onnx"), "--html", m)));
        Assert.Contains("is the input", Refused("verify", m, m, "--html", m, "--samples", "1", "--seq-len", "8"));
        Assert.Contains("is the input", Refused("diff", m, m, "--html", m));
        Assert.Contains("is the input", Refused("calibrate", m, "--calib", "random", "-o", m));
        File.WriteAllText(P("target.txt"), "keep me\n");
        File.CreateSymbolicLink(P("report-link.json"), P("target.txt"));
        Assert.Contains("symbolic link", Refused(Compile(m, "-o", P("q.onnx"), "--report", P("report-link.json"))));
    }

    [Fact]
    public void DevicesFoldersAndImpossiblePathsAreRefusedBeforeTheCompile()
    {
        string m = Input();
        File.WriteAllText(P("file"), "x");
        Directory.CreateDirectory(P("folder"));
        Assert.Contains("not a regular file", Refused(Compile(m, "-o", "/dev/null")));
        Assert.False(File.Exists("/dev/null.report.json"));
        Assert.Contains("not a regular file", Refused(Compile(m, "-o", P("q.onnx"), "--report", "/dev/null")));
        Assert.Contains("not a regular file", Refused("calibrate", m, "--calib", "random", "-o", "/dev/zero"));
        Assert.Contains("is a folder", Refused(Compile(m, "-o", P("folder"))));
        Assert.Contains("is a folder", Refused(Compile(m, "-o", P("folder") + "/")));
        Assert.Contains("empty path", Refused(Compile(m, "-o", "")));
        Assert.Contains("is a file, not a folder", Refused(Compile(m, "-o", Path.Combine(P("file"), "q.onnx"))));
        Assert.Contains("bytes; at most", Refused(Compile(m, "-o", P(new string('a', 260) + ".onnx"))));
    }

    [Fact]
    public void EveryInputIsCheckedBeforeAnythingIsWritten()
    {
        string m = Input();
        Assert.Contains("not found", Refused("compile", m, "-o", P("new/deeper/q.onnx"), "--recipe", "w8a8", "--samples", "1", "--seq-len", "16", "--data", P("missing.txt")));
        Assert.False(Directory.Exists(P("new")));
        Assert.Contains("not found", Refused(Compile(m, "-o", P("q.onnx"), "--calib", P("missing.txt"))));
        Assert.Contains("not found", Refused(Compile(m, "-o", P("q.onnx"), "--stats", P("missing.json"))));
    }

    [Fact]
    public void FilesQuantcDidNotWriteAreReplacedOnlyWithForce()
    {
        string m = Input();
        File.WriteAllText(P("notes.txt"), "my notes\n");
        File.WriteAllText(P("q.onnx.data"), "someone else's data");
        Assert.Contains("--force", Refused(Compile(m, "-o", P("notes.txt"))));
        Assert.Contains("--force", Refused(Compile(m, "-o", P("q2.onnx"), "--report", P("notes.txt"))));
        Assert.Contains("--force", Refused(Compile(m, "-o", P("q.onnx"))));
        var (code, _, stderr) = Run(Compile(m, "-o", P("q2.onnx"), "--report", P("notes.txt"), "--force"));
        Assert.True(code == 0, stderr);
        Assert.StartsWith("{", File.ReadAllText(P("notes.txt")));
    }

    [Fact]
    public void EarlierOutputsAreReplacedAndNothingIsLeftBehind()
    {
        string m = Input();
        for (int i = 0; i < 2; i++)
        {
            var (code, _, stderr) = Run("compile", m, "-o", P("q.onnx"), "--html", P("q.html"), "--recipe", "w8a8", "--samples", "1", "--seq-len", "16");
            Assert.True(code == 0, stderr);
        }
        Assert.Equal(0, Run("calibrate", m, "--calib", "random", "--samples", "1", "--seq-len", "8", "-o", P("s.json")).Code);
        Assert.Equal(0, Run("calibrate", m, "--calib", "random", "--samples", "1", "--seq-len", "8", "-o", P("s.json")).Code);
        Assert.Equal(0, Run("diff", m, P("q.onnx"), "--html", P("d.html")).Code);
        Assert.Equal(0, Run("diff", m, P("q.onnx"), "--html", P("d.html")).Code);
        Assert.Equal(["d.html", "m.onnx", "q.html", "q.onnx", "q.report.json", "s.json"], Snapshot().Keys.ToArray());
        Assert.True(PreviousOutputs.Is(P("q.onnx"), OutputKind.Model));
        Assert.False(PreviousOutputs.Is(P("q.html"), OutputKind.Model));
        Assert.True(PreviousOutputs.Is(P("q.report.json"), OutputKind.Report));
    }

    [Fact]
    public void LongNamesWorkAndAKilledRunsStagingIsRemoved()
    {
        string m = Input();
        // A staging folder whose process is gone (pid 2^22 + 1 is above Linux's pid_max).
        Directory.CreateDirectory(P(OutputSet.StagingPrefix + "4194305-deadbeef"));
        File.WriteAllText(Path.Combine(P(OutputSet.StagingPrefix + "4194305-deadbeef"), "q.onnx"), "half");
        string name = new string('n', 245) + ".onnx"; // 250 bytes, its data file 255
        var (code, _, stderr) = Run(Compile(m, "-o", P(name), "--report", P("r.json")));
        Assert.True(code == 0, stderr);
        Assert.Equal(["m.onnx", name, "r.json"], Snapshot().Keys.ToArray());
        // Without --report the default report name (stem + ".report.json", 257 bytes) is shortened to fit the 255 bytes.
        (code, _, stderr) = Run(Compile(m, "-o", P(name)));
        Assert.True(code == 0, stderr);
        Assert.Contains(new string('n', 243) + ".report.json", Snapshot().Keys);
    }

    [Fact]
    public void DataGivenWithNoVerifyIsAContradiction()
    {
        string m = Input();
        Assert.Contains("--no-verify skips the verification that reads it",
            Refused(Compile(m, "-o", P("q.onnx"), "--data", P("missing.txt"))));
        Assert.Equal(["m.onnx"], Snapshot().Keys.ToArray());
    }
}
