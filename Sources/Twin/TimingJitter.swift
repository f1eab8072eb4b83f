import Features
import Scheduling

extension TwinOptions {
    /// The same model with the testbed's timing jitter: the control plane's latencies (a request
    /// handed to its replica, a result heard, a start acted on, a migration decision reaching its
    /// source) each scaled by a factor in 1 ± `spread`, drawn from `run`. Run 0 is the model as
    /// set. On the testbed these latencies vary from run to run, and the few migrations made when
    /// a replica just crosses a policy threshold follow them, so a twin run alone gives one draw of
    /// the count; several show how far it swings. A restarted agent's registration swings more
    /// (± 3 × `spread`: 0.66–1.19 s over five kills here), and the policy's rounds fall anywhere
    /// in their interval, as the coordinator's timer has no phase tied to the workload.
    public func jittered(run: Int, spread: Double = 0.1) -> TwinOptions {
        guard run > 0, spread > 0 else { return self }
        var rng = SplitMix64(seed: UInt64(run) &* 0x9E37_79B9_7F4A_7C15)
        func factor() -> Double { 1 + spread * (2 * rng.uniform() - 1) }
        var o = self
        o.serveLatency *= factor()
        o.reportLatency *= factor()
        o.startLatency *= factor()
        var m = o.migration
        m?.controlLatency *= factor()
        // Drawn after the latencies above, so those keep the values they had before these existed.
        o.rejoinLatency *= factor()
        if var m {
            m.firstRoundAfter = rng.uniform() * m.interval
            o.migration = m
        }
        return o
    }
}
