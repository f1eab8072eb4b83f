import Foundation

/// A player's device, as published by its maker. Emulated players render, spend memory and drain
/// their battery from these figures; every row names where its numbers come from, and figures that
/// are this model's own assumptions say so.
public struct DeviceProfile: Sendable, Equatable {
    public let name: String
    public let example: String
    /// Peak FP32 throughput of the device's GPU, TFLOPS.
    public let gpuTFLOPS: Double
    public let memoryGiB: Double
    public let batteryWh: Double
    /// What the GPU (or the whole SoC for phones and headsets) draws at full render load, W.
    public let renderWatts: Double
    /// What the device draws when idle with the screen on, W (assumption of this model: 1/5 of the render power).
    public var idleWatts: Double { renderWatts / 5 }
    /// Network class it connects over unless the spec says otherwise.
    public let defaultNetwork: String
    /// On mains power from the start (a laptop docked, a console on its stand).
    public let pluggedIn: Bool
    public let source: String
}

/// A network class between a device and the sites: one-way latency, jitter and bandwidth.
public struct NetworkClass: Sendable, Equatable {
    public let name: String
    public let oneWayMs: Double
    public let jitterMs: Double
    public let bandwidthMbps: Double
    public let source: String
}

/// Devices, networks and render GPUs for the game feature (D2.1 T2.4).
public enum DeviceCatalog {
    public static let devices: [DeviceProfile] = [
        DeviceProfile(name: "phone", example: "Snapdragon 865 phone (Galaxy S20 class)", gpuTFLOPS: 1.2, memoryGiB: 8, batteryWh: 15.4,
                      renderWatts: 6, defaultNetwork: "5g", pluggedIn: false,
                      source: "Adreno 650: 512 FP32 ALUs × 2 × 587 MHz ≈ 1.2 TFLOPS (Qualcomm publishes ALUs and clock, not TFLOPS); Galaxy S20: 8 GB, 4,000 mAh × 3.85 V = 15.4 Wh; 6 W sustained SoC power is this model's assumption"),
        DeviceProfile(name: "laptop", example: "MacBook Air M1 (8-core GPU)", gpuTFLOPS: 2.6, memoryGiB: 8, batteryWh: 49.9,
                      renderWatts: 10, defaultNetwork: "wifi", pluggedIn: false,
                      source: "Apple newsroom, Nov 2020: M1 8-core GPU 2.6 TFLOPS; MacBook Air M1 tech specs: 8 GB, 49.9 Wh; ~10 W GPU package power (AnandTech M1 review measurements)"),
        DeviceProfile(name: "handheld", example: "Steam Deck (LCD)", gpuTFLOPS: 1.6, memoryGiB: 16, batteryWh: 40,
                      renderWatts: 15, defaultNetwork: "wifi", pluggedIn: false,
                      source: "Valve Steam Deck tech specs: 8 RDNA 2 CUs up to 1.6 TFLOPS FP32, 16 GB LPDDR5, 40 Wh battery, APU 4–15 W"),
        DeviceProfile(name: "vr-headset", example: "Meta Quest 2 (Snapdragon XR2)", gpuTFLOPS: 1.2, memoryGiB: 6, batteryWh: 14,
                      renderWatts: 7, defaultNetwork: "wifi", pluggedIn: false,
                      source: "Snapdragon XR2 = Adreno 650 class (≈1.2 TFLOPS, as the phone row); Meta Quest 2 specs: 6 GB, 3,640 mAh ≈ 14 Wh; 7 W is this model's assumption"),
    ]

    public static let networks: [NetworkClass] = [
        NetworkClass(name: "4g", oneWayMs: 22.5, jitterMs: 2.5, bandwidthMbps: 7.21,
                     source: "Continuum preset: 4G endpoint 45±5 ms round trip to the cloud at 7.21 Mbit/s (data/README)"),
        NetworkClass(name: "5g", oneWayMs: 10, jitterMs: 2, bandwidthMbps: 29.66,
                     source: "Continuum preset: 5G endpoint at 29.66 Mbit/s (data/README); 20 ms round trip is this model's assumption"),
        NetworkClass(name: "wifi", oneWayMs: 3.75, jitterMs: 1.25, bandwidthMbps: 100,
                     source: "Continuum edge preset 7.5±2.5 ms round trip (data/README); 100 Mbit/s Wi-Fi is this model's assumption"),
        NetworkClass(name: "wired", oneWayMs: 1.25, jitterMs: 0.5, bandwidthMbps: 1000,
                     source: "Continuum cloud preset: 2.5±1 ms round trip at 1 Gbit/s (data/README)"),
    ]

    /// FP32 throughput of the catalogue's GPUs for rendering (the catalogue's own figures are tensor-core FP16).
    public static let renderTFLOPS: [String: (Double, String)] = [
        "K80": (4.37, "Tesla K80 datasheet, per GPU"), "P100": (9.3, "Tesla P100 PCIe datasheet"),
        "V100": (15.7, "V100 SXM2 datasheet"), "V100-32GB": (15.7, "V100 SXM2 datasheet"),
        "T4": (8.1, "T4 datasheet"), "A10": (31.2, "A10 datasheet"), "A40": (37.4, "A40 datasheet"),
        "L4": (30.3, "L4 datasheet"), "L40S": (91.6, "L40S datasheet"),
        "A100-40GB": (19.5, "A100 datasheet"), "A100-80GB": (19.5, "A100 datasheet"),
        "H100": (67, "H100 SXM datasheet"), "H200": (67, "H200 datasheet (as H100 SXM)"),
    ]

    public static var deviceNames: [String] { devices.map(\.name) }
    public static var networkNames: [String] { networks.map(\.name) }
    public static func device(named n: String) -> DeviceProfile? { devices.first { $0.name == n.lowercased() } }
    public static func network(named n: String) -> NetworkClass? {
        let k = n.lowercased().replacingOccurrences(of: "-", with: "")
        return networks.first { $0.name == k }
    }
    public static func renderGPU(_ model: String) -> Double? { renderTFLOPS[model]?.0 }
}
