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
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "CURVE keys for a secure testbed.", subcommands: [Generate.self, AddAgents.self])

    struct AddAgents: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-agents",
            abstract: "Add per-agent key pairs to an existing key directory (agents/NAME.key), pinned in authorized_keys.",
            discussion: "A NAME whose key file exists keeps its key, pinned in authorized_keys to the ids given now. A running coordinator reloads authorized_keys by itself.")
        @Argument var directory: String
        @Option(name: .customLong("agent"), help: "A per-agent key pair NAME=ID,ID,PREFIX* (repeatable).") var agent: [String] = []
        func run() throws {
            guard !agent.isEmpty else { throw UserFacingError("give at least one --agent NAME=ID,…") }
            do {
                var list: [(name: String, nodes: [String])] = []
                for a in agent {
                    let p = a.split(separator: "=", maxSplits: 1).map(String.init)
                    guard p.count == 2, !p[0].isEmpty, !p[1].isEmpty else { throw UserFacingError("--agent '\(a)': expected NAME=ID,ID,PREFIX*") }
                    list.append((p[0], p[1].split(separator: ",").map(String.init)))
                }
                let dir = KeyDirectory(path: directory)
                guard FileManager.default.fileExists(atPath: dir.file("authorized_keys")) else {
                    throw UserFacingError("\(dir.file("authorized_keys")) does not exist: run `strato keys generate \(directory)` first")
                }
                let added = try dir.addAgents(list)
                print(added.isEmpty ? "every named agent already has its key in \(directory)/agents, pinned to those ids"
                                    : "\(added.count) per-agent keys in \(directory)/agents added or pinned to new ids: \(added.joined(separator: ", "))")
            } catch let e as UserFacingError { throw e } catch { throw UserFacingError("\(error)") }
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write coordinator, agent, operator and driver key pairs and authorized_keys into DIR.",
            discussion: """
                authorized_keys lines are `PUBLIC-KEY ROLE [nodes=ID,…]` with ROLE agent, operator or driver.
                --agents N adds agents/agent-0.key … agents/agent-(N-1).key, each pinned to the node id of its
                name; --agent NAME=ID,ID adds one pinned to the ids given (a process with --virtual hosts
                NAME-0, NAME-1, …: pin NAME-*). Start an agent with --client-key DIR/agents/NAME.key.
                """)
        @Argument var directory: String
        @Option(help: "Also write N per-agent key pairs (agents/agent-I.key, each pinned to node id agent-I).") var agents: Int = 0
        @Option(name: .customLong("agent"), help: "A per-agent key pair NAME=ID,ID,PREFIX* (repeatable).") var agent: [String] = []
        func run() throws {
            do {
                var list: [(name: String, nodes: [String])] = (0..<max(0, agents)).map { ("agent-\($0)", ["agent-\($0)"]) }
                for a in agent {
                    let p = a.split(separator: "=", maxSplits: 1).map(String.init)
                    guard p.count == 2, !p[0].isEmpty, !p[1].isEmpty else { throw UserFacingError("--agent '\(a)': expected NAME=ID,ID,PREFIX*") }
                    list.append((p[0], p[1].split(separator: ",").map(String.init)))
                }
                let dir = try KeyDirectory.generate(at: directory, agents: list)
                print("wrote CURVE keys to \(dir.path): coordinator.key, coordinator.pub, agent.key, operator.key, driver.key, authorized_keys"
                      + (list.isEmpty ? "" : ", and \(list.count) per-agent keys in agents/"))
                print("start the coordinator with --keys \(dir.path); agents and `strato status` take the same --keys")
            } catch let e as UserFacingError { throw e } catch { throw UserFacingError("\(error)") }
        }
    }
}
