using System.Security.Cryptography;

namespace Quantc.Cli.Tests;

/// <summary>
/// A test with its own temporary folder, running the CLI in-process, and the check every refused run must pass:
/// exit 2, exactly one "quantc: error:" line on stderr, and the folder exactly as it was (nothing written, no input changed).
/// </summary>
public abstract class FolderTest : IDisposable
{
    protected FolderTest(string prefix) => Dir = Directory.CreateTempSubdirectory(prefix);

    protected DirectoryInfo Dir { get; }

    public void Dispose()
    {
        Dir.Delete(recursive: true);
        GC.SuppressFinalize(this);
    }

    protected string P(string name) => Path.Combine(Dir.FullName, name);

    protected static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Every file under the test folder with its SHA-256 (links listed by their target).</summary>
    protected SortedDictionary<string, string> Snapshot()
    {
        var s = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in Directory.EnumerateFileSystemEntries(Dir.FullName, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(Dir.FullName, f);
            var info = new FileInfo(f);
            if (info.LinkTarget is { } t) s[rel] = "-> " + t;
            else if (Directory.Exists(f)) s[rel] = "dir";
            else s[rel] = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)));
        }
        return s;
    }

    /// <summary>Runs a command that must be refused: exit 2, one "quantc: error:" line, nothing on disk changed; returns the line.</summary>
    protected string Refused(params string[] args)
    {
        var before = Snapshot();
        var (code, stdout, stderr) = Run(args);
        Assert.True(code == 2, $"exit {code}: {stderr}{stdout}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, stderr);
        Assert.StartsWith("quantc: error: ", lines[0]);
        Assert.Equal(before, Snapshot());
        return lines[0];
    }
}
