using Quantc.Core.Compilation;
using Spectre.Console;

namespace Quantc.Cli;

/// <summary>Progress bars on an interactive terminal; nothing in CI or when output is piped.</summary>
internal static class ProgressBar
{
    /// <summary>True when progress should be drawn.</summary>
    public static bool Enabled =>
        !Console.IsErrorRedirected && !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("CI") is not { Length: > 0 };

    /// <summary>The compile's stages (compiling, verifying) drawn as progress bars.</summary>
    public static IStageRunner Stages { get; } = new Runner();

    private sealed class Runner : IStageRunner
    {
        public T Run<T>(string label, Func<IProgress<(int Done, int Total)>?, T> work) => ProgressBar.Run(label, work);
    }

    /// <summary>Runs <paramref name="work"/> with a progress bar labelled <paramref name="label"/> (or silently).</summary>
    public static T Run<T>(string label, Func<IProgress<(int Done, int Total)>?, T> work)
    {
        if (!Enabled) return work(null);
        T result = default!;
        AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
            new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(label);
                result = work(new Progress<(int Done, int Total)>(p =>
                {
                    task.MaxValue = p.Total;
                    task.Value = p.Done;
                }));
            });
        return result;
    }
}
