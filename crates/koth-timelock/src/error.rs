//! The one error type of the crate.

/// Everything that can go wrong here. Bad input of any kind (garbage or truncated ciphertexts,
/// signatures of the wrong length or off the curve, round 0, a zero tempo) comes back as one of
/// these; nothing in this crate panics on input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimelockError {
    /// drand rounds start at 1; round 0 has no beacon and no signature.
    #[error("drand round 0 does not exist (rounds start at 1)")]
    RoundZero,
    /// A drand signature on quicknet is one compressed G1 point: 48 bytes.
    #[error("a drand signature is {expected} bytes, got {got}")]
    SignatureLength { expected: usize, got: usize },
    /// The signature bytes are not a point of BLS12-381's G1 prime-order subgroup (or are the
    /// point at infinity).
    #[error("the signature is not a valid G1 point: {0}")]
    SignatureEncoding(String),
    /// The signature is a curve point but not the beacon's signature for that round.
    #[error("the signature does not verify for round {round} under the network's public key")]
    SignatureMismatch { round: u64 },
    /// The network's public key is not a valid compressed G2 point.
    #[error("the network public key is not a valid G2 point: {0}")]
    PublicKey(String),
    /// The network has a period of 0 seconds.
    #[error("the drand network's period is 0")]
    PeriodZero,
    /// The bytes are not a timelock ciphertext as bittensor-drand serializes it.
    #[error("malformed timelock ciphertext: {0}")]
    MalformedCiphertext(String),
    /// The ciphertext parsed but did not open under this signature: a signature for another
    /// round, or a tampered ciphertext.
    #[error("the ciphertext does not decrypt with this signature ({0})")]
    DecryptionFailed(String),
    /// The symmetric encryption step failed.
    #[error("encryption failed: {0}")]
    Encryption(String),
    /// A SCALE payload (commitment string, weights payload, SDK envelope) did not decode.
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// `block_time` must be a finite, non-negative number of seconds.
    #[error("block time must be finite and >= 0 seconds, got {0}")]
    BlockTime(f64),
    /// A unix time given as seconds must be finite and non-negative.
    #[error("unix time must be finite and >= 0 seconds, got {0}")]
    Time(f64),
    /// The time given lies before the drand network's genesis.
    #[error("unix time {now} is before the drand genesis {genesis}")]
    BeforeGenesis { now: u64, genesis: u64 },
    /// The subnet's tempo is 0: it runs no epochs, so no reveal block exists.
    #[error("tempo is zero; the subnet does not run epochs")]
    TempoZero,
    /// subtensor bounds the commit-reveal period (`MAX_COMMIT_REVEAL_PEROIDS`).
    #[error("reveal period of {got} epochs is above subtensor's maximum of {max}")]
    RevealPeriodTooLarge { got: u64, max: u64 },
    /// The reveal-block simulation ran past its budget without reaching the target epoch.
    #[error("reveal block simulation exceeded its budget")]
    ScheduleBoundExceeded,
    /// A block or epoch number computed from the input does not fit in u64 (the legacy epoch
    /// formula on a block number near `u64::MAX`).
    #[error("block arithmetic overflows u64")]
    BlockOverflow,
}
