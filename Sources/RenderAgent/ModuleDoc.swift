/// # RenderAgent
///
/// A render site's slots and render GPU, for registration and telemetry.
