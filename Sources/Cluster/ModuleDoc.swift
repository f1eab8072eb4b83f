/// # Cluster
///
/// The pure machines of membership (failure detector, membership, command ledger, clock offsets,
/// link emulator, network conditions and their control file) and the agent shell (`AgentSession`:
/// registration, heartbeats, reconnection, routing each feature's commands and reports to its
/// `FeatureHandler`), the operator client and the trace recorder. Machines take time as arguments;
/// the session owns its DEALER on the thread that calls `run()`.
