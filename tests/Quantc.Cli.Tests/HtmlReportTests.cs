using System.Diagnostics;
using Xunit.Abstractions;

namespace Quantc.Cli.Tests;

/// <summary>The HTML pages open in headless Chromium without script errors (Debian's chromium; ./test installs it).</summary>
public sealed class HtmlReportTests(ITestOutputHelper log) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quantc-html");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Chromium()
    {
        foreach (var c in new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" })
            if (File.Exists(c)) return c;
        Assert.Fail("headless Chromium is needed for the HTML tests: apt-get install chromium (./test does)");
        return "";
    }

    /// <summary>Loads the page headless, returns the DOM after scripts ran, and saves a screenshot under the test output.</summary>
    private string Render(string page, string screenshotName)
    {
        var profile = Directory.CreateDirectory(Path.Combine(_dir.FullName, "profile-" + screenshotName));
        string[] common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--hide-scrollbars", $"--user-data-dir={profile.FullName}", "--window-size=1400,1000"];
        string shots = Path.Combine(AppContext.BaseDirectory, "screenshots");
        Directory.CreateDirectory(shots);
        string shot = Path.Combine(shots, screenshotName + ".png");
        Run([.. common, $"--screenshot={shot}", "file://" + page]);
        Assert.True(File.Exists(shot) && new FileInfo(shot).Length > 1000, "no screenshot was written");
        log.WriteLine($"screenshot: {shot}");
        return Run([.. common, "--virtual-time-budget=2000", "--dump-dom", "file://" + page]);
    }

    private static string Run(string[] args)
    {
        var psi = new ProcessStartInfo(Chromium()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(90_000)) { p.Kill(entireProcessTree: true); Assert.Fail("chromium did not finish in 90 s"); }
        return stdout.Result;
    }

    private (string A, string B) Models()
    {
        var cli = new CliTests();
        var a = Path.Combine(_dir.FullName, "a.onnx");
        var b = Path.Combine(_dir.FullName, "b.onnx");
        File.Copy(cli.SmallModelFor(0, "a"), a);
        File.Copy(cli.SmallModelFor(0.05f, "b"), b);
        cli.Dispose();
        return (a, b);
    }

    [Fact]
    public void DiffPageRendersWithoutScriptErrors()
    {
        var (a, b) = Models();
        var page = Path.Combine(_dir.FullName, "diff.html");
        var o = new StringWriter();
        Assert.Equal(0, Cli.Run(["diff", a, b, "--html", page], o, new StringWriter()));
        var dom = Render(page, "diff");
        Assert.Contains("data-status=\"ok\"", dom);
        Assert.Contains("fc.weight", dom); // the first changed layer's details were filled in by the script
    }

    [Fact]
    public void VerifyPageRendersWithoutScriptErrors()
    {
        var (a, b) = Models();
        var cli = new CliTests();
        var data = cli.NpzFor();
        var page = Path.Combine(_dir.FullName, "verify.html");
        Assert.Equal(0, Cli.Run(["verify", a, b, "--data", data, "--html", page], new StringWriter(), new StringWriter()));
        cli.Dispose();
        var dom = Render(page, "verify");
        Assert.Contains("data-status=\"ok\"", dom);
        Assert.Contains("<figure class=\"chart\" id=\"chart-sqnr\"", dom);
        Assert.Contains("<figure class=\"chart\" id=\"chart-ranges\"", dom);
    }

    [Fact]
    public void CompilePageRendersWithoutScriptErrors()
    {
        var page = Path.Combine(_dir.FullName, "compile.html");
        var o = new StringWriter();
        var e = new StringWriter();
        Assert.True(Cli.Run(["compile", "--recipe", "spike-mixed", "--samples", "4", "-o", Path.Combine(_dir.FullName, "c.onnx"), "--html", page], o, e) == 0, e.ToString());
        var dom = Render(page, "compile");
        Assert.Contains("data-status=\"ok\"", dom);
        Assert.Contains("down_proj", dom);
        Assert.Contains("<figure class=\"chart\" id=\"chart-pass-times\"", dom);
    }
}
