/// # GPUAgent
///
/// A GPU node's resources and telemetry (`EmulatedGPUNode`: GPUs from the catalogue, labelled
/// emulated; real devices from `nvidia-smi`). What it runs comes from the feature handlers the
/// composition root gives it.
