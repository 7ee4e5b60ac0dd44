// The test classes of this assembly run one after another. CI once (in about twenty runs of the suite, 2026-12-02) saw
// the test host segfault inside libonnxruntime.so (ONNX Runtime 1.31.1, a .NET thread-pool thread, in a list
// traversal) while these classes created and ran many sessions in parallel; nothing in them shares a session.
// Serially the assembly measured 24 s (29–33 s in parallel), still alongside the other
// test assemblies.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]
