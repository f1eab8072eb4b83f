/// # strato
///
/// The command-line tool and the composition roots: `CoordinatorCommand` lists the coordinator's
/// feature controllers, `AgentCommand` the feature handlers each node kind hosts.
