/// # Protocol
///
/// The Swift code generated from `Protos/stratolab/v1/*.proto` (committed; `scripts/gen-protos`)
/// and short aliases for it. The .proto files are the contract.
