/// # Features
///
/// One folder per capability, each with its agent-side handler (`FeatureHandler`), its
/// coordinator-side controller (`CoordinatorFeature`), its execution backends and its store tables;
/// its wire messages are its own proto file. `Jobs/` and `Inference/` share one controller because
/// one scheduler decides both; `DataPlaneProbe/` owns each node's data-plane socket. Registered by
/// the composition roots in `strato` (`CoordinatorCommand`, `AgentCommand`).
