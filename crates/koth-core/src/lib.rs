//! koth's shared vocabulary.
//!
//! Everything that more than one part of the network must agree on byte for byte lives here:
//! how a digest is written, what a commitment payload says, the stable codes with which a
//! submission is refused, how a safetensors header is validated. This crate does no I/O beyond
//! hashing bytes it is handed and the one durable file write ([`fsutil::write_atomic`]) that
//! every crate shares, so every other crate may depend on it.

pub mod checkpoint;
pub mod clock;
pub mod competition;
pub mod digest;
pub mod fsutil;
pub mod npy;
pub mod payload;
pub mod reject;
pub mod safetensors;
pub mod verdict;

pub use digest::{Digest, DigestError, Sha256Writer};
pub use npy::{NpyArray, NpyData, NpyDtype, NpyError, NpyHeader};
pub use payload::{CommitmentPayload, PayloadError};
pub use reject::RejectCode;
