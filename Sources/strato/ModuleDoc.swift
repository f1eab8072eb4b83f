/// # strato
///
/// The command-line tool and the composition roots: `CoordinatorCommand` lists the coordinator's
/// feature controllers, `AgentCommand` the feature handlers each node kind hosts.
///
/// `Benchmarks/` holds the `strato bench` figures beside the command that prints them: control
/// plane, wire, data plane, tracing, scheduling and the twin, each measuring its own baseline in
/// the same run.
