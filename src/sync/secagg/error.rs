//! The one error type of secure aggregation, shared by the participant, the server's
//! unmasking and the wire checks. Every variant has a stable code (the server answers it in
//! its JSON error body), so that a client can tell a round it should leave (the round
//! failed, it was not in the cohort) from a message it got wrong.

/// Everything that can go wrong in a round. Stable codes: never rename one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    /// A message that does not parse, or whose fields contradict each other or the round.
    #[error("malformed round message: {0}")]
    Malformed(String),
    /// A message (or a share, or a masked vector) for another round than this one.
    #[error("message for round {got}, this is round {want}")]
    WrongRound { got: u64, want: u64 },
    /// The round is past (or not yet at) the phase the message belongs to.
    #[error("round {round} is in phase {phase}, the message belongs to {expected}")]
    WrongPhase {
        round: u64,
        phase: String,
        expected: String,
    },
    /// A message of a phase the sender already answered, with other content (an identical
    /// retry is answered as the first was).
    #[error("replayed message: {0}")]
    Replayed(String),
    /// The sender is not a member of the round's cohort (or not of the phase's survivors).
    #[error("not a member of round {0}'s cohort")]
    NotInCohort(u64),
    /// Fewer survivors than the threshold: nothing can be (or may be) reconstructed.
    #[error("{survivors} survivors, below the threshold of {threshold}")]
    BelowThreshold { survivors: usize, threshold: usize },
    /// An encrypted share failed authentication (tampered, or for another pair or round).
    #[error("a share failed authentication: {0}")]
    ShareAuthentication(String),
    /// A share the round needs is missing (a server that dropped one, say).
    #[error("missing share: {0}")]
    MissingShare(String),
    /// A reconstructed secret does not match its commitment or public key: a wrong share
    /// was given; the sum is not computed.
    #[error("reconstruction failed: {0}")]
    Reconstruction(String),
    /// The server's view of the survivors contradicts an earlier one (a client revealing
    /// both secrets of one member would unmask that member's input).
    #[error("inconsistent survivor sets: {0}")]
    Equivocation(String),
    /// Round parameters out of range.
    #[error("invalid round parameters: {0}")]
    InvalidParams(String),
    /// An input outside what the quantiser represents (non-finite, or a sum that would
    /// wrap around the modulus).
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// No randomness from the platform: no keys can be made.
    #[error("no randomness available: {0}")]
    Randomness(String),
    /// The round ended without a sum (too few survivors, a failed reconstruction, the
    /// privacy budget): contributions return to their clients' queues.
    #[error("round failed: {0}")]
    RoundFailed(String),
    /// The server refused a request of the round (its status and error code).
    #[error("the server refused: {status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer from the server (offline, timed out).
    #[error("network: {0}")]
    Network(String),
    /// The sync state could not be read or stored.
    #[error("storage: {0}")]
    Storage(String),
}

pub type SecAggResult<T> = std::result::Result<T, SecAggError>;

impl SecAggError {
    /// Every code, in declaration order.
    pub const CODES: [&'static str; 17] = [
        "secagg_malformed",
        "secagg_wrong_round",
        "secagg_wrong_phase",
        "secagg_replayed",
        "secagg_not_in_cohort",
        "secagg_below_threshold",
        "secagg_share_authentication",
        "secagg_missing_share",
        "secagg_reconstruction",
        "secagg_equivocation",
        "secagg_invalid_params",
        "secagg_out_of_range",
        "secagg_randomness",
        "secagg_round_failed",
        "secagg_rejected",
        "secagg_network",
        "secagg_storage",
    ];

    /// The stable code (what the server's error body carries).
    pub fn code(&self) -> &'static str {
        let i = match self {
            SecAggError::Malformed(_) => 0,
            SecAggError::WrongRound { .. } => 1,
            SecAggError::WrongPhase { .. } => 2,
            SecAggError::Replayed(_) => 3,
            SecAggError::NotInCohort(_) => 4,
            SecAggError::BelowThreshold { .. } => 5,
            SecAggError::ShareAuthentication(_) => 6,
            SecAggError::MissingShare(_) => 7,
            SecAggError::Reconstruction(_) => 8,
            SecAggError::Equivocation(_) => 9,
            SecAggError::InvalidParams(_) => 10,
            SecAggError::OutOfRange(_) => 11,
            SecAggError::Randomness(_) => 12,
            SecAggError::RoundFailed(_) => 13,
            SecAggError::Rejected { .. } => 14,
            SecAggError::Network(_) => 15,
            SecAggError::Storage(_) => 16,
        };
        Self::CODES[i]
    }

    /// The HTTP status the server answers it with.
    pub fn status(&self) -> u16 {
        match self {
            SecAggError::Malformed(_)
            | SecAggError::ShareAuthentication(_)
            | SecAggError::InvalidParams(_)
            | SecAggError::OutOfRange(_) => 400,
            SecAggError::NotInCohort(_) => 403,
            SecAggError::WrongRound { .. }
            | SecAggError::WrongPhase { .. }
            | SecAggError::Replayed(_)
            | SecAggError::Equivocation(_)
            | SecAggError::MissingShare(_) => 409,
            SecAggError::BelowThreshold { .. }
            | SecAggError::Reconstruction(_)
            | SecAggError::RoundFailed(_) => 422,
            SecAggError::Randomness(_) | SecAggError::Storage(_) => 500,
            SecAggError::Rejected { status, .. } => *status,
            SecAggError::Network(_) => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_prefixed() {
        let mut codes = SecAggError::CODES.to_vec();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), SecAggError::CODES.len());
        assert!(codes.iter().all(|c| c.starts_with("secagg_")));
        assert_eq!(
            SecAggError::WrongRound { got: 1, want: 2 }.code(),
            "secagg_wrong_round"
        );
        assert_eq!(
            SecAggError::RoundFailed(String::new()).code(),
            "secagg_round_failed"
        );
    }
}
