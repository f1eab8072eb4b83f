/// # Experiments
///
/// Topologies and the testbed launcher (processes, compose, swarm), experiment specs and their
/// runner, faults, the request driver, trace merge and export, results and the HTML report.
/// Called by `strato` commands and the multi-process tests.
