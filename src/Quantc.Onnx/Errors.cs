namespace Quantc.Onnx;

/// <summary>
/// A problem with what the user handed us (a missing, truncated or corrupt file, unsafe external
/// data, an unknown operator, a wrong shape). The CLI prints <see cref="Exception.Message"/> as one
/// line and exits with code 2; it never shows a stack trace for these.
/// </summary>
public class BadInputException : Exception
{
    public BadInputException(string message) : base(message) { }
    public BadInputException(string message, Exception inner) : base(message, inner) { }
}
