import Foundation
import ArgumentParser

/// Whole numbers given as one value, comma-separated ("256,1024"), as a list option's help shows
/// its default; an option that takes several values (`.upToNextOption`) also takes them spaced.
struct IntList: ExpressibleByArgument, Sendable {
    let values: [Int]

    init(_ values: [Int]) { self.values = values }

    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let ints = parts.compactMap { Int($0) }
        guard !parts.isEmpty, ints.count == parts.count else { return nil }
        values = ints
    }

    var defaultValueDescription: String { values.map(String.init).joined(separator: ",") }
}

extension Array where Element == IntList {
    var flattened: [Int] { flatMap(\.values) }
}
