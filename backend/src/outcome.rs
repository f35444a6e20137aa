//! How a request ended: what the request log, the stats and the worker's bookkeeping
//! learn from each protocol.

/// How a request ended, for the request log line.
pub enum Outcome {
    /// The response was sent: status code and body bytes.
    Sent { status: u16, bytes: u64 },
    /// The app raised before committing a response; a 500 was sent (or attempted).
    AppFailed { traceback: String },
    /// The app raised after the head was sent: the response is cut short.
    Aborted { status: u16, traceback: String },
    /// The peer went away (short body, closed socket); nothing more can be sent.
    PeerGone { reason: String },
}
