/// # Features
///
/// One folder per capability, each with its pure machines (`Machine/`: events with a time in,
/// decisions out; no socket, clock or store), its agent-side handler (`FeatureHandler`), its
/// coordinator-side controller (`CoordinatorFeature`), its execution backends, its twin model (what
/// the agents do, on virtual time, for module `Twin`) and its store tables; its wire messages are
/// its own proto file. `Jobs/` and `Inference/` share one controller because one scheduler decides
/// both; `DataPlaneProbe/` owns each node's data-plane socket. Registered by the composition roots
/// in `strato` (`CoordinatorCommand`, `AgentCommand`).
