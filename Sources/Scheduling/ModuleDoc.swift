/// # Scheduling
///
/// Pure and wire-free: the GPU and model catalogues, the knowledge base and its importers, the
/// scheduler and its seven policies, execution and inference models, workloads. The coordinator's
/// scheduling controller and the twin (module `Twin`) run the same code.
