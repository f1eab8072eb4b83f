import ArgumentParser
import Experiments
import Foundation
import Protocol
import Wire

struct TestbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "testbed", abstract: "Start or stop a whole testbed of local processes.",
        subcommands: [Up.self, Down.self])

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start the coordinator and every agent of TOPOLOGY.yaml; wait until all are alive.")
        @Argument(help: "Topology file (see experiments/default-topology.yaml).") var topology: String
        @Option(name: .customLong("run-dir"), help: "Where pids, logs, state and keys go.") var runDir = Testbed.defaultRunDirectory
        @Option(help: "Seconds to wait for every node to be alive.") var timeout: Double = 60

        func run() throws {
            let topo: Topology
            do { topo = try Topology.load(file: topology) } catch { throw UserFacingError("\(error)") }
            print("testbed '\(topo.name)': \(topo.nodeIDs.count) nodes, security \(topo.security.rawValue), endpoint \(topo.coordinator.endpoint)")
            let bed: Testbed
            do { bed = try Testbed.up(topology: topo, runDirectory: runDir) { print("  \($0)") } } catch {
                throw UserFacingError("\(error)")
            }
            let t0 = Date()
            do {
                let s = try bed.waitUntilAlive(timeoutSeconds: timeout) { s in
                    let alive = s.nodes.filter { $0.state == .alive }.count
                    print(String(format: "  %4.1f s: %d/%d nodes alive", Date().timeIntervalSince(t0), alive, bed.nodeIDs.count))
                }
                print("")
                print(StatusFormatter.table(s))
                print("\nall \(bed.nodeIDs.count) nodes alive; logs in \(bed.runDirectory)/logs; stop with `strato testbed down`")
            } catch {
                throw UserFacingError("\(error)\n(the testbed is still running: `strato testbed down` stops it)")
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop every process of the running testbed.")
        @Option(name: .customLong("run-dir")) var runDir = Testbed.defaultRunDirectory

        func run() throws {
            guard let bed = Testbed.load(runDirectory: runDir) else {
                print("no testbed is running from \(runDir)")
                return
            }
            bed.down { print("  \($0)") }
            print("testbed stopped; logs and state kept in \(bed.runDirectory)")
        }
    }
}

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "CURVE keys for a secure testbed.", subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write coordinator, agent and operator key pairs and authorized_keys into DIR.")
        @Argument var directory: String
        func run() throws {
            do {
                let dir = try KeyDirectory.generate(at: directory)
                print("wrote CURVE keys to \(dir.path): coordinator.key, coordinator.pub, agent.key, operator.key, authorized_keys")
                print("start the coordinator with --keys \(dir.path); agents and `strato status` take the same --keys")
            } catch { throw UserFacingError("\(error)") }
        }
    }
}
