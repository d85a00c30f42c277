//! Secure aggregation of the shared update (issue 14, DESIGN §12), after SecAgg (Bonawitz
//! et al., CCS 2017) with the server as the relay, as in Flower's SecAgg+ workflow. Without
//! I/O: [`participant`] is a client's side, [`aggregator`] the server's checks and unmasking;
//! hosts move the [`messages`].
//!
//! A round, per model: members join with two X25519 public keys and a commitment to a
//! self-mask seed (`advertise`); each member Shamir-shares (t of n) its seed and its
//! mask-agreement secret key and relays every other member's pair of shares through the
//! server, sealed with ChaCha20-Poly1305 under a key agreed with that member (`share`); each
//! sharer sends its clipped delta quantised into Z/2³² plus its self mask plus one pairwise
//! mask per other sharer, expanded by ChaCha20 from an HKDF-SHA256 seed bound to the model,
//! round and pair (`input`); each survivor reveals, per sharer, either its seed share (the
//! member's input arrived) or its key share (it did not) — never both (`unmask`). With `t`
//! answers the server removes every mask and learns the sum of the survivors' inputs and
//! nothing else; with fewer it learns nothing, and the round fails.
//!
//! Files: [`error`] (one error type, stable codes), [`quantize`] (fixed point and its error
//! bound), [`crypto`] (primitives from maintained crates), [`shamir`] (sharing, via
//! `blahaj`), [`masks`] (the mask algebra), [`messages`] (wire), [`participant`],
//! [`aggregator`], [`session`] (a client's round over the sync ports and its offline queue).

pub mod aggregator;
pub mod crypto;
pub mod error;
pub mod masks;
pub mod messages;
pub mod participant;
pub mod quantize;
pub mod session;
pub mod shamir;

#[cfg(test)]
mod tests;

pub use error::{SecAggError, SecAggResult};
pub use messages::{Phase, RoundParams, RoundView};
pub use participant::Participant;
pub use quantize::Quantizer;
