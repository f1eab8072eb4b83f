/// # Twin
///
/// The digital twin: a discrete-event loop on virtual time (trace seconds) over the same machines
/// the coordinator runs (`Scheduler`, the policies, `RequestRouter`) and the features' twin models
/// standing in for the agents (`JobsTwinModel`, `InferenceTwinModel`). It owns no feature logic of
/// its own: a feature joins the twin through its twin model. Called by `strato twin` and the
/// scheduling benchmark; validated against testbed runs by `strato twin validate`.
