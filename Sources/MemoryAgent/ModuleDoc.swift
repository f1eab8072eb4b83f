/// # MemoryAgent
///
/// A memory host's tiers (DRAM, CXL, NVMe) as probed at start, for registration and telemetry.
