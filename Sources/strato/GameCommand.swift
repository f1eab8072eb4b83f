import ArgumentParser
import Cluster
import DataPlane
import Features
import Foundation
import Protocol
import Scheduling

/// `strato game …`: the world server, and the game's status on a running testbed.
struct GameCommandGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "game", abstract: "The virtual world: run its server, or see players, where each renders, FPS and latency.",
        subcommands: [Server.self, Status.self])

    struct Server: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "server", abstract: "An authoritative voxel world at a fixed tick rate (registers as a world node).")
        @OptionGroup var common: AgentCommand.Common
        @Option(name: .customLong("tick-hz"), help: "Ticks per second (Minecraft: 20).") var tickHz = 20.0
        @Option(help: "World seed (terrain and entities).") var seed: UInt64 = 1
        @Option(help: "Wandering entities in the world.") var entities = 64
        @Option(name: .customLong("max-players"), help: "Players the world takes; more are refused.") var maxPlayers = 2000

        func validate() throws {
            guard (1...1000).contains(tickHz) else { throw ValidationError("--tick-hz \(tickHz) must be within 1 … 1000") }
            guard (0...100_000).contains(entities) else { throw ValidationError("--entities \(entities) must be within 0 … 100000") }
            guard maxPlayers >= 1 else { throw ValidationError("--max-players must be at least 1") }
            guard common.virtual == 1 else { throw ValidationError("--virtual: a world server is one node") }
        }

        func run() throws {
            try common.run { identity, plane in
                guard let plane else { throw ValidationError("a world server needs its data plane (--data-endpoint must not be none)") }
                return WorldNode(handler: WorldServerHandler(nodeID: identity.nodeID, plane: plane.plane, tickHz: tickHz, seed: seed,
                                                             entities: entities, maxPlayers: maxPlayers))
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "Players, where each renders, FPS and latency; render sites; the world's ticks.")
        @OptionGroup var address: CoordinatorAddress
        @Option(help: "Only this player.") var player = ""
        @Flag(help: "JSON for scripts.") var json = false

        func run() throws {
            let client = try address.client()
            defer { client.close() }
            let reply = try client.game(player: player)
            print(json ? try reply.jsonString() : GameTable.render(reply))
        }
    }
}

/// `strato client …`: clients of the testbed's services.
struct ClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "client", abstract: "Clients: players of the virtual world.", subcommands: [Player.self])

    struct Player: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "player", abstract: "Players on emulated devices (--virtual N: many in one process), rendering locally or streamed from a render site.")
        @OptionGroup var common: AgentCommand.Common
        @Option(help: "Device profile: \(DeviceCatalog.deviceNames.joined(separator: ", ")); a comma list is spread over the players.") var device = "phone"
        @Option(help: "Network class: \(DeviceCatalog.networkNames.joined(separator: ", ")) (default: the device's).") var network: String?
        @Option(help: "Behaviour: \(Behaviour.allCases.map(\.rawValue).joined(separator: ", ")); a comma list is spread over the players.") var behaviour = "random-walk"
        @Option(name: .customLong("view-distance"), help: "Render distance in chunks.") var viewDistance = 8
        @Option(name: .customLong("other-load"), help: "Mean share of the device's GPU taken by other work (0 … 0.9).") var otherLoad = 0.2
        @Option(name: .customLong("dock-after"), help: "Seconds after which the device is plugged in.") var dockAfter: Double?
        @Option(help: "Battery charge at start (0 … 1).") var battery = 1.0

        func setups() throws -> [PlayerSetup] {
            let devices = try device.split(separator: ",").map { name -> DeviceProfile in
                guard let d = DeviceCatalog.device(named: String(name)) else {
                    throw ValidationError("--device '\(name)' is unknown (known: \(DeviceCatalog.deviceNames.joined(separator: ", ")))")
                }
                return d
            }
            let behaviours = try behaviour.split(separator: ",").map { name -> Behaviour in
                guard let b = Behaviour.named(String(name)) else {
                    throw ValidationError("--behaviour '\(name)' is unknown (known: \(Behaviour.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return b
            }
            let net = try network.map { n -> NetworkClass in
                guard let c = DeviceCatalog.network(named: n) else { throw ValidationError("--network '\(n)' is unknown (known: \(DeviceCatalog.networkNames.joined(separator: ", ")))") }
                return c
            }
            guard !devices.isEmpty, !behaviours.isEmpty else { throw ValidationError("--device and --behaviour need at least one name") }
            return (0..<common.virtual).map { i in
                let d = devices[i % devices.count]
                var s = PlayerSetup(device: d, network: net ?? DeviceCatalog.network(named: d.defaultNetwork)!, behaviour: behaviours[i % behaviours.count])
                s.viewDistance = viewDistance; s.otherLoad = otherLoad; s.dockAfterSeconds = dockAfter; s.battery = battery
                return s
            }
        }

        func validate() throws {
            guard (2...32).contains(viewDistance) else { throw ValidationError("--view-distance \(viewDistance) must be within 2 … 32") }
            guard (0...0.9).contains(otherLoad) else { throw ValidationError("--other-load \(otherLoad) must be within 0 … 0.9") }
            guard (0...1).contains(battery) else { throw ValidationError("--battery \(battery) must be within 0 … 1") }
            _ = try setups()
        }

        func run() throws {
            Strato.bootstrapLogging()
            let ids = common.identities()
            // One data plane for every player of the process (frames and updates name their player).
            let endpoint = common.dataEndpoint ?? "tcp://127.0.0.1:0"
            guard endpoint != "none" else { throw ValidationError("players need a data plane (--data-endpoint must not be none)") }
            let setups = try setups()
            // The players' access network: their class's latency, jitter and bandwidth (emulated on
            // every link of the process) unless --net-* options say otherwise.
            var network: NetworkConditions?
            let classes = Set(setups.map(\.network.name))
            if !common.hasNetworkOptions, classes.count == 1, let c = setups.first?.network {
                var n = NetworkConditions.none
                n.delayMs = c.oneWayMs; n.jitterMs = c.jitterMs; n.bandwidthBytesPerSecond = c.bandwidthMbps * 1e6 / 8
                network = n
            } else if !common.hasNetworkOptions && classes.count > 1 {
                print("players: network classes \(classes.sorted().joined(separator: ", ")) share one process: its links are not emulated (use one process per class)")
            }
            let plane: DataPlane
            // Named after the process's first player: a node its key may claim (the data plane
            // refuses frames naming a node the sender's key is not pinned to).
            do { plane = try DataPlane(config: try common.dataPlaneConfig(nodeID: ids[0].nodeID, endpoint: endpoint, network: network)) } catch let e as ValidationError { throw e } catch {
                throw ValidationError("--data-endpoint \(endpoint): could not bind the data plane: \(error)")
            }
            let fleet = PlayerFleet(plane: plane)
            let nodes = zip(ids, setups).map { id, setup in (id, fleet.add(id: id.nodeID, setup: setup) as AgentBehavior) }
            try common.runNodes(nodes, extraHandlers: [fleet], network: network)
        }
    }
}
