/// # Benchmarks
///
/// The `strato bench` figures: control plane, wire, data plane, tracing, scheduling and the twin;
/// each measures its own baseline in the same run.
