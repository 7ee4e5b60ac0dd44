using System.Text;

namespace Quantc.Core.Data;

/// <summary>A tokenizer: text → token ids.</summary>
public interface ITokenizer
{
    /// <summary>Short name for reports.</summary>
    string Name { get; }

    /// <summary>Token ids of <paramref name="text"/> (without BOS).</summary>
    long[] Encode(string text);

    /// <summary>The beginning-of-sequence token, if the model uses one.</summary>
    long? Bos { get; }
}

/// <summary>
/// The byte-level tokenizer of quantc's reference models: one token per UTF-8 byte (ids 0–255),
/// and BOS = 256. Needs nothing external.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    /// <summary>The beginning-of-sequence id.</summary>
    public const long BosId = 256;

    /// <summary>Vocabulary size (256 bytes + BOS).</summary>
    public const int VocabSize = 257;

    public string Name => "byte";
    public long? Bos => BosId;
    public long[] Encode(string text) => Encoding.UTF8.GetBytes(text).Select(b => (long)b).ToArray();

    /// <summary>Text of byte-token ids (others are skipped).</summary>
    public static string Decode(IEnumerable<long> ids) =>
        Encoding.UTF8.GetString(ids.Where(i => i is >= 0 and < 256).Select(i => (byte)i).ToArray());
}
