import ArgumentParser
import Experiments
import Foundation

struct ComposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compose", abstract: "Containers for any topology: generate its compose file (runs under docker-compose, `docker compose` and Swarm).",
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the compose file of a topology or an experiment spec's topology (its world server and players included).",
            discussion: """
            Run it with STRATO_COMPOSE_FILE=FILE scripts/compose-up (or scripts/swarm-up); `strato experiment run SPEC --on compose` \
            generates one for each run by itself. Every node's command is the one the local testbed starts, with the image's paths.
            """)
        @Argument(help: "A topology file (with nodes:) or an experiment spec.") var file: String
        @Option(name: [.short, .customLong("out")], help: "Where to write it (default: standard output).") var out: String?
        @Option(name: .customLong("keys-default"), help: "Key directory the file names when STRATO_KEYS is unset.") var keysDefault = ".strato/compose/keys"

        func run() throws {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch { throw UserFacingError("cannot read \(file): \(error.localizedDescription)") }
            let topology: Topology
            var note: String?
            do {
                if text.range(of: "(?m)^nodes:", options: .regularExpression) != nil {
                    topology = try Topology.load(file: file)
                } else {
                    let spec = try ExperimentSpec.load(file: file)
                    // A spec that compares policies runs one per run; this file is the first run's.
                    let listed = spec.variants
                    topology = spec.topology(forVariant: listed[0])
                    if listed.count > 1 {
                        note = "the spec compares \(listed.count) policies (\(listed.joined(separator: ", "))); this file is the first run's (\(listed[0])): `strato experiment run \(file) --on compose` generates one per run"
                    }
                }
            } catch { throw UserFacingError("\(error)") }
            let keys = (keysDefault as NSString).isAbsolutePath ? keysDefault : FileManager.default.currentDirectoryPath + "/" + keysDefault
            let yaml: String
            do { yaml = try ComposeFile.render(topology, source: file, keysDefault: keys) } catch { throw UserFacingError("\(error)") }
            if let out {
                do { try yaml.write(toFile: out, atomically: true, encoding: .utf8) } catch { throw UserFacingError("cannot write \(out): \(error.localizedDescription)") }
                FileHandle.standardError.write(Data("wrote \(out): \(topology.nodes.count) node services (\(topology.nodeIDs.count) nodes) and the coordinator\n".utf8))
            } else {
                print(yaml, terminator: "")
            }
            if let note { FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
        }
    }
}
