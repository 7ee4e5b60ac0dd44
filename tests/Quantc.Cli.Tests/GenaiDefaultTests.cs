using System.Diagnostics;

namespace Quantc.Cli.Tests;

/// <summary>Without -o, compile writes a GenAI folder for a decoder with a KV cache GenAI can run, one .onnx file otherwise; the
/// default output is relative to the working folder, so quantc runs as a process in a temporary one.</summary>
public sealed class GenaiDefaultTests() : FolderTest("quantc-genai-default-")
{
    private (int Code, string Out, string Err) Process(params string[] args)
    {
        var psi = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "quantc"))
        {
            WorkingDirectory = Dir.FullName, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(entireProcessTree: true); Assert.Fail("quantc did not finish in 120 s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string Bundled(string name) => Path.Combine(Path.GetDirectoryName(Cli.DefaultModelPath())!, name);

    [Fact]
    public void KvCacheDecodersGetAFolderUnlessOptedOut()
    {
        var (code, stdout, stderr) = Process("compile", "--recipe", "w8a8-dynamic", "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        string folder = P("out/tiny-llama.w8a8-dynamic");
        foreach (var f in new[] { "model.onnx", "model.report.json", "genai_config.json", "tokenizer.json" })
            Assert.True(File.Exists(Path.Combine(folder, f)), f);
        Assert.Contains($"GenAI folder {folder}:", stdout);

        (code, stdout, stderr) = Process("compile", "--recipe", "w8a8-dynamic", "--no-verify", "--no-genai");
        Assert.True(code == 0, stderr + stdout);
        Assert.True(File.Exists(P("out/tiny-llama.w8a8-dynamic.onnx")));
        Assert.DoesNotContain("GenAI folder", stdout);

        // OPT's positions come from attention_mask: GenAI runs it too.
        (code, stdout, stderr) = Process("compile", Bundled("tiny-opt.onnx"), "--recipe", "w8a8-dynamic", "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        Assert.True(File.Exists(P("out/tiny-opt.w8a8-dynamic/genai_config.json")));

        // No KV cache (Mamba): one file, nothing to note.
        (code, stdout, stderr) = Process("compile", Bundled("tiny-mamba.onnx"), "--recipe", "mamba-w8a8", "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        Assert.True(File.Exists(P("out/tiny-mamba.mamba-w8a8.onnx")));
        Assert.DoesNotContain("GenAI", stdout + stderr);

        (code, _, stderr) = Process("compile", "--genai", "--no-genai", "--no-verify");
        Assert.Equal(2, code);
        Assert.Contains("--genai and --no-genai contradict each other", stderr);
    }

    [Fact]
    public void ADecoderGenaiCannotRunIsWrittenAsOneFileWithTheReason()
    {
        // The tiny LLaMA with a fixed batch of 1 in its cache inputs: still a KV-cache decoder, but GenAI needs the batch symbolic.
        var p = Quantc.Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Cli.DefaultModelPath()));
        foreach (var i in p.Graph.Input.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)))
            i.Type.TensorType.Shape.Dim[0].DimValue = 1;
        string model = P("fixed.onnx");
        File.WriteAllBytes(model, Google.Protobuf.MessageExtensions.ToByteArray(p));
        var (code, stdout, stderr) = Process("compile", model, "--recipe", "w8a8-dynamic", "--no-verify");
        Assert.True(code == 0, stderr + stdout);
        Assert.True(File.Exists(P("out/fixed.w8a8-dynamic.onnx")));
        Assert.Contains("quantc: note: writing one model file, not a GenAI folder: ", stderr);
        Assert.Contains("fixed batch dimension", stderr);
        // Asked for explicitly, the same model is refused with that reason.
        (code, _, stderr) = Process("compile", model, "--recipe", "w8a8-dynamic", "--no-verify", "--genai", "-o", P("g"));
        Assert.Equal(2, code);
        Assert.Contains("fixed batch dimension", stderr);
    }
}
