import Foundation
import MemoryAgent
import Protocol

/// Renders a coordinator status as the operator's table or as JSON for scripts.
public enum StatusFormatter {
    public static func resources(_ c: Capabilities) -> String {
        switch c.kind {
        case .gpu(let g)?:
            return "\(g.count)× \(g.model) \(ByteSize.format(g.memoryBytesPerGpu))\(g.emulated ? " (emulated)" : "")"
        case .memory(let m)?:
            return m.tiers.map { "\($0.kind.name) \(ByteSize.format($0.capacityBytes))\($0.emulated ? "*" : "")" }.joined(separator: ", ")
        case .render(let r)?:
            return "\(r.renderSlots) slots, \(r.gpuModel)"
        case .player(let p)?:
            return "\(p.device) on \(p.network)\(p.emulated ? " (emulated)" : "")"
        case .world(let w)?:
            return String(format: "world at %.0f Hz", w.tickHz)
        default:
            return "-"
        }
    }

    static func age(_ nanos: Int64) -> String {
        if nanos < 0 { return "never" }
        let ms = Double(nanos) / 1e6
        return ms < 1000 ? String(format: "%.0f ms", ms) : String(format: "%.1f s", ms / 1000)
    }

    static func offset(_ n: NodeStatus) -> String {
        guard n.hasClock, n.clock.samples > 0 else { return "-" }
        return String(format: "%+.3f±%.3f ms", Double(n.clock.offsetNanos) / 1e6, Double(n.clock.errorBoundNanos) / 1e6)
    }

    public static func table(_ s: StatusReply, maxRows: Int = 200) -> String {
        let header = ["NODE", "KIND", "SITE", "STATE", "INC", "RESOURCES", "LAST HB", "CLOCK OFFSET"]
        var rows = s.nodes.prefix(maxRows).map { n in
            [n.nodeID, n.kind.name, "\(n.site.name)/\(n.site.kind.name)", n.state.name + (n.drained ? " (drained)" : ""),
             "\(n.incarnation)", resources(n.capabilities), age(n.lastHeartbeatAgeNanos), offset(n)]
        }
        if s.nodes.count > maxRows { rows.append(["… \(s.nodes.count - maxRows) more", "", "", "", "", "", "", ""]) }
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        var out = [line(header)] + rows.map(line)
        let by = Dictionary(grouping: s.nodes, by: { $0.state.name }).mapValues(\.count)
        let summary = ["alive", "suspect", "dead", "left"].compactMap { k in by[k].map { "\($0) \(k)" } }.joined(separator: ", ")
        out.append("")
        out.append("\(s.nodes.count) nodes: \(summary.isEmpty ? "none" : summary) · coordinator epoch \(s.coordinatorEpoch) · "
                   + (s.secure ? "CURVE on" : "OPEN (no CURVE)") + " · pending commands \(s.pendingCommands)")
        let bad = s.counters.filter { $0.name.hasPrefix("rejected_") && $0.value > 0 }
        if !bad.isEmpty { out.append("rejected input: " + bad.map { "\($0.name.dropFirst(9))=\($0.value)" }.joined(separator: ", ")) }
        if s.nodes.contains(where: { n in if case .memory(let m)? = n.capabilities.kind { return m.tiers.contains(where: \.emulated) }; return false }) {
            out.append("* emulated tier (no such hardware here; figures scaled from measured DRAM by published ratios)")
        }
        return out.joined(separator: "\n")
    }

    /// JSON for scripts: one object per node with the fields operators filter on.
    public static func json(_ s: StatusReply) -> String {
        let nodes: [[String: Any]] = s.nodes.map { n in
            var o: [String: Any] = [
                "id": n.nodeID, "kind": n.kind.name, "site": n.site.name, "site_kind": n.site.kind.name,
                "state": n.state.name, "incarnation": n.incarnation, "labels": n.labels,
                "last_heartbeat_age_ms": n.lastHeartbeatAgeNanos < 0 ? -1 : Double(n.lastHeartbeatAgeNanos) / 1e6,
                "resources": resourcesJSON(n.capabilities), "running": n.running, "host": n.host, "pid": n.pid,
                "drained": n.drained, "data_endpoint": n.dataEndpoint.isEmpty ? NSNull() : n.dataEndpoint as Any,
            ]
            if n.hasClock && n.clock.samples > 0 {
                o["clock_offset_ms"] = Double(n.clock.offsetNanos) / 1e6
                o["clock_error_ms"] = Double(n.clock.errorBoundNanos) / 1e6
            } else {
                o["clock_offset_ms"] = NSNull()
                o["clock_error_ms"] = NSNull()
            }
            return o
        }
        let root: [String: Any] = [
            "coordinator": ["epoch": s.coordinatorEpoch, "version": s.coordinatorVersion, "secure": s.secure,
                            "state_dir": s.stateDir, "pending_commands": s.pendingCommands],
            "nodes": nodes,
            "counters": Dictionary(uniqueKeysWithValues: s.counters.map { ($0.name, $0.value) }),
            "control": ["heartbeats_handled": s.control.heartbeatsHandled, "heartbeats_per_second": s.control.heartbeatsPerSecond,
                        "heartbeat_latency_p50_ms": s.control.heartbeatLatencyP50Ms,
                        "heartbeat_latency_p99_ms": s.control.heartbeatLatencyP99Ms,
                        "cpu_seconds": s.control.processCpuSeconds],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func resourcesJSON(_ c: Capabilities) -> [String: Any] {
        switch c.kind {
        case .gpu(let g)?:
            return ["gpu_model": g.model, "gpu_count": g.count, "memory_bytes_per_gpu": g.memoryBytesPerGpu,
                    "memory_bandwidth_gbps": g.memoryBandwidthGbps, "fp16_tflops": g.fp16Tflops,
                    "interconnect": "\(g.interconnect)", "emulated": g.emulated]
        case .memory(let m)?:
            return ["tiers": m.tiers.map { ["tier": $0.kind.name, "capacity_bytes": $0.capacityBytes, "bandwidth_gbps": $0.bandwidthGbps,
                                            "latency_ns": $0.latencyNs, "emulated": $0.emulated, "method": $0.method] as [String: Any] }]
        case .render(let r)?:
            return ["site_kind": r.siteKind.name, "render_slots": r.renderSlots, "gpu_model": r.gpuModel, "max_fps": r.maxFps]
        case .player(let p)?:
            return ["device": p.device, "network": p.network, "gpu_tflops": p.gpuTflops, "memory_gib": p.memoryGib, "behaviour": p.behaviour, "emulated": p.emulated]
        case .world(let w)?:
            return ["tick_hz": w.tickHz, "max_players": w.maxPlayers]
        default:
            return [:]
        }
    }
}
