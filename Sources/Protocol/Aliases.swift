// Short names for the generated stratolab.v1 messages. The .proto files in Protos/ are the
// contract; regenerate with scripts/gen-protos.
public typealias Envelope = Stratolab_V1_Envelope
public typealias TraceContext = Stratolab_V1_TraceContext
public typealias ErrorReply = Stratolab_V1_ErrorReply
public typealias ErrorCode = Stratolab_V1_ErrorCode
public typealias NodeKind = Stratolab_V1_NodeKind
public typealias SiteKind = Stratolab_V1_SiteKind
public typealias Site = Stratolab_V1_Site
public typealias Interconnect = Stratolab_V1_Interconnect
public typealias GpuCapabilities = Stratolab_V1_GpuCapabilities
public typealias MemoryTierKind = Stratolab_V1_MemoryTierKind
public typealias MemoryTier = Stratolab_V1_MemoryTier
public typealias MemoryCapabilities = Stratolab_V1_MemoryCapabilities
public typealias RenderCapabilities = Stratolab_V1_RenderCapabilities
public typealias PlayerCapabilities = Stratolab_V1_PlayerCapabilities
public typealias WorldCapabilities = Stratolab_V1_WorldCapabilities
public typealias Capabilities = Stratolab_V1_Capabilities
public typealias Register = Stratolab_V1_Register
public typealias RegisterAck = Stratolab_V1_RegisterAck
public typealias Deregister = Stratolab_V1_Deregister
public typealias Telemetry = Stratolab_V1_Telemetry
public typealias GpuTelemetry = Stratolab_V1_GpuTelemetry
public typealias TierTelemetry = Stratolab_V1_TierTelemetry
public typealias ClockEstimate = Stratolab_V1_ClockEstimate
public typealias Heartbeat = Stratolab_V1_Heartbeat
public typealias HeartbeatAck = Stratolab_V1_HeartbeatAck
public typealias Command = Stratolab_V1_Command
public typealias CommandAck = Stratolab_V1_CommandAck
public typealias StatusRequest = Stratolab_V1_StatusRequest
public typealias StatusReply = Stratolab_V1_StatusReply
public typealias NodeStatus = Stratolab_V1_NodeStatus
public typealias NodeState = Stratolab_V1_NodeState
public typealias ControlStats = Stratolab_V1_ControlStats
public typealias OperatorCommand = Stratolab_V1_OperatorCommand
public typealias OperatorCommandReply = Stratolab_V1_OperatorCommandReply

/// The protocol version this build speaks.
public let currentProtocolVersion: UInt32 = UInt32(Stratolab_V1_ProtocolVersion.current.rawValue)

extension NodeKind {
    /// Lower-case name used on the command line and in status output.
    public var name: String {
        switch self {
        case .gpu: return "gpu"
        case .memory: return "memory"
        case .render: return "render"
        case .player: return "player"
        case .world: return "world"
        default: return "unspecified"
        }
    }
}

extension SiteKind {
    public var name: String {
        switch self {
        case .cloud: return "cloud"
        case .edge: return "edge"
        case .device: return "device"
        default: return "unspecified"
        }
    }

    public init?(name: String) {
        switch name.lowercased() {
        case "cloud": self = .cloud
        case "edge": self = .edge
        case "device": self = .device
        default: return nil
        }
    }
}

extension NodeState {
    public var name: String {
        switch self {
        case .alive: return "alive"
        case .suspect: return "suspect"
        case .dead: return "dead"
        case .left: return "left"
        default: return "unknown"
        }
    }
}

extension MemoryTierKind {
    public var name: String {
        switch self {
        case .dram: return "dram"
        case .cxl: return "cxl"
        case .nvme: return "nvme"
        default: return "unspecified"
        }
    }

    public init?(name: String) {
        switch name.lowercased() {
        case "dram": self = .dram
        case "cxl": self = .cxl
        case "nvme": self = .nvme
        default: return nil
        }
    }
}

public typealias JobReport = Stratolab_V1_JobReport
public typealias JobState = Stratolab_V1_JobState
public typealias StartJob = Stratolab_V1_StartJob
public typealias PreemptJob = Stratolab_V1_PreemptJob
public typealias JobSubmission = Stratolab_V1_JobSubmission
public typealias SubmitJobs = Stratolab_V1_SubmitJobs
public typealias SubmitJobsReply = Stratolab_V1_SubmitJobsReply
public typealias JobsRequest = Stratolab_V1_JobsRequest
public typealias JobStatus = Stratolab_V1_JobStatus
public typealias JobsReply = Stratolab_V1_JobsReply
public typealias TracePhase = Stratolab_V1_TracePhase
public typealias TraceEvent = Stratolab_V1_TraceEvent
public typealias TraceBatch = Stratolab_V1_TraceBatch
public typealias TraceBatchAck = Stratolab_V1_TraceBatchAck
public typealias RequestResult = Stratolab_V1_RequestResult
public typealias StartReplica = Stratolab_V1_StartReplica
public typealias StopReplica = Stratolab_V1_StopReplica
public typealias ServeRequests = Stratolab_V1_ServeRequests
public typealias InferenceRequest = Stratolab_V1_InferenceRequest
public typealias ServiceSubmission = Stratolab_V1_ServiceSubmission
/// Named apart from `Scheduling.RatePoint`, which modules importing both also see.
public typealias RateCurvePoint = Stratolab_V1_RatePoint
public typealias SubmitRequests = Stratolab_V1_SubmitRequests
public typealias SubmitRequestsReply = Stratolab_V1_SubmitRequestsReply
public typealias RequestsRequest = Stratolab_V1_RequestsRequest
public typealias ServiceStatus = Stratolab_V1_ServiceStatus
public typealias RequestRecord = Stratolab_V1_RequestRecord
public typealias RequestsReply = Stratolab_V1_RequestsReply

// Data plane (dataplane.proto).
public typealias DataFrame = Stratolab_V1_DataFrame
public typealias TransferOffer = Stratolab_V1_TransferOffer
public typealias StreamMessage = Stratolab_V1_StreamMessage
public typealias TransferAccept = Stratolab_V1_TransferAccept
public typealias ChunkHeader = Stratolab_V1_ChunkHeader
public typealias TransferCredit = Stratolab_V1_TransferCredit
public typealias TransferComplete = Stratolab_V1_TransferComplete
public typealias TransferError = Stratolab_V1_TransferError
public typealias DataPlaneErrorCode = Stratolab_V1_DataPlaneErrorCode

// Features on the membership messages (membership.proto).
public typealias FeatureReport = Stratolab_V1_FeatureReport
public typealias SettledReports = Stratolab_V1_SettledReports
public typealias FeatureCommand = Stratolab_V1_FeatureCommand
public typealias FeatureResult = Stratolab_V1_FeatureResult
// Feature "jobs" (jobs.proto) and "inference" (inference.proto).
public typealias JobCommand = Stratolab_V1_JobCommand
public typealias PreemptJobResult = Stratolab_V1_PreemptJobResult
public typealias InferenceCommand = Stratolab_V1_InferenceCommand
public typealias FeatureMessage = Stratolab_V1_FeatureMessage
// Feature "dataplane" (dataplane_probe.proto).
public typealias ProbeCommand = Stratolab_V1_ProbeCommand
public typealias ProbeResult = Stratolab_V1_ProbeResult
public typealias ProbeRequest = Stratolab_V1_ProbeRequest
public typealias StartProbe = Stratolab_V1_StartProbe
public typealias ProbeStatus = Stratolab_V1_ProbeStatus
public typealias ProbeReply = Stratolab_V1_ProbeReply
