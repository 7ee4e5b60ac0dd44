using System.Runtime.InteropServices;
using Quantc.Onnx;

namespace Quantc.Passes;

/// <summary>
/// Up to <c>cap</c> rows of each tensor, a uniform sample over a calibration run (reservoir sampling, seeded, so a compile is
/// reproducible): an observer for <see cref="Quantc.Core.Pipeline.PassContext.Calibrate"/>. A tensor's reservoir lives where
/// <paramref name="spill"/> puts a buffer of its size — in the model's spill file for a large model
/// (<see cref="Quantc.Ir.Model.SpillFileFor"/>: the rows of every smoothed input of a 1b model are hundreds of MB that would
/// otherwise stay resident through the whole calibration), else in memory; the rows are the same either way. Read them
/// back one tensor at a time with <see cref="Rows"/>.
/// </summary>
public sealed class RowSampler(IReadOnlyList<string> tensors, int cap, Func<long, SpillFile?>? spill = null)
{
    private sealed class State
    {
        public float[]? Rows;
        public SpillRegion? Spilled;
        public int Channels;
        public long Seen;
        public readonly Random Rng = new(17);
    }

    private readonly Dictionary<string, State> _state = tensors.Distinct().ToDictionary(n => n, _ => new State(), StringComparer.Ordinal);

    /// <summary>Takes one sample's rows of <paramref name="name"/> (thread-safe across tensors; one tensor's samples come in order).
    /// </summary>
    public void Observe(string name, ReadOnlySpan<float> data, int channels)
    {
        var st = _state[name];
        lock (st)
        {
            if (st.Rows is null && st.Spilled is null)
            {
                long bytes = 4L * cap * channels;
                st.Channels = channels;
                SpillFile? file;
                lock (_state) file = spill?.Invoke(bytes);    // the model opens its spill file on first use: once
                if (file is not null) st.Spilled = file.Reserve(bytes);
                else st.Rows = new float[(long)cap * channels];
            }
            else if (channels != st.Channels)
                throw new ArgumentException($"{name}: {channels} channels, earlier samples had {st.Channels}");
            for (int r = 0; r < data.Length / channels; r++)
            {
                long t = st.Seen++;
                long slot = t < cap ? t : st.Rng.NextInt64(t + 1);
                if (slot >= cap) continue;
                var row = data.Slice(r * channels, channels);
                if (st.Spilled is { } region) region.Write(4 * slot * channels, MemoryMarshal.AsBytes(row));
                else row.CopyTo(st.Rows.AsSpan((int)slot * channels, channels));
            }
        }
    }

    /// <summary>The sampled rows of <paramref name="name"/> ([count, channels], a fresh array for spilled ones) and how many there
    /// are.</summary>
    public (float[] Rows, int Count) Rows(string name)
    {
        var st = _state[name];
        lock (st)
        {
            int count = (int)Math.Min(st.Seen, cap);
            if (st.Spilled is not { } region) return (st.Rows ?? [], count);
            var rows = new float[(long)count * st.Channels];
            region.Read(0, MemoryMarshal.AsBytes(rows.AsSpan()));
            return (rows, count);
        }
    }
}
