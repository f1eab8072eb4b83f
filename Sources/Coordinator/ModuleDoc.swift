/// # Coordinator
///
/// The coordinator shell (`CoordinatorServer`): the ROUTER socket, decoding, membership, command
/// delivery, one SQLite transaction per loop turn (replies and commands go out after it commits),
/// status and trace collection, and the `StateStore`. Features plug in as `CoordinatorFeature`s and
/// see only `CoordinatorServices`; the shell has no case for any of them. Called from
/// `strato coordinator` (the composition root) and tests.
