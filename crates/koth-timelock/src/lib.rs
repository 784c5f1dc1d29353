//! drand timelock encryption as Bittensor uses it: pure functions, no chain, no network, no
//! clock (every time is an argument).
//!
//! # The scheme
//!
//! drand quicknet is a threshold BLS beacon on BLS12-381 of the unchained G1 scheme
//! (`bls-unchained-g1-rfc9380`): every `period` (3 s) since `genesis_time` (1692803367) it
//! publishes, for round `r`, the signature `σ_r = s · H(sha256(r as u64 big-endian))`, where
//! `H` hashes to G1 by RFC 9380 with the DST `BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_`,
//! `s` is the group secret and `P = s · g2` (G2, 96 bytes compressed) its public key.
//! [`verify_round_signature`] checks `e(σ_r, g2) = e(H(m_r), P)`, as subtensor's
//! pallets/drand verifier does before it stores a pulse.
//!
//! That signature is the Boneh–Franklin private key of the identity `m_r`, so anyone can
//! encrypt to a future round and nobody can decrypt before the beacon reaches it:
//! [`encrypt`] draws a 32-byte key, wraps it with BF-IBE (FullIdent, Fujisaki–Okamoto:
//! `U = r·g2`, `V = σ ⊕ sha256(e(P, H(m))^r)`, `W = key ⊕ sha256(σ)`) and encrypts the
//! plaintext under it with AES-256-GCM. [`decrypt_with_signature`] undoes it with `σ_r`.
//! The primitives are those of the `timelock` crate 0.0.1 (ideal-lab5/timelock, the code
//! subtensor and bittensor-drand pin by git), used through its `TinyBLS381` engine.
//!
//! # Bytes
//!
//! A ciphertext is arkworks' compressed serialization of timelock's
//! `TLECiphertext<TinyBLS381>`: `U` (96 bytes), then `V`, `W`, the AES body (itself the
//! serialized `{ciphertext ‖ tag, nonce}`) and the cipher suite `AES_GCM_`, each a u64
//! little-endian length and its bytes: [`CIPHERTEXT_OVERHEAD`] bytes more than the plaintext.
//! This is what bittensor-drand's `encrypt_and_compress` writes and subtensor's
//! pallets/commitments and weights reveal read. The Python SDK's `encrypt`, `encrypt_at_round`
//! and `decrypt_with_signature` wrap it in an [`SdkEnvelope`] (SCALE `Vec<u8>` then `u64`
//! round); the chain never sees that envelope.
//!
//! The plaintexts are SCALE: a commitment is a SCALE string ([`commitment_plaintext`]); a
//! weights commit is subtensor's [`WeightsTlockPayload`] `{ hotkey: Vec<u8>, uids: Vec<u16>,
//! values: Vec<u16>, version_key: u64 }`.
//!
//! # Reveal rounds
//!
//! [`commitment_reveal_round`] is bittensor-drand's `encrypt_commitment` rule (behind the SDK's
//! `get_encrypted_commitment` and `set_reveal_commitment`). [`weights_reveal`] is its
//! `generate_commit_v2` rule (behind `get_encrypted_commit_v2` and
//! `commit_timelocked_mechanism_weights`): the reveal block predicted by the stateful epoch
//! schedule of [`epoch`] (a port of bittensor-drand's `epoch_schedule.rs` with its test
//! vectors), plus a security offset of 3 blocks, turned into a round at the given time.
//! [`legacy_weights_reveal`] is bittensor-drand 1.x's `generate_commit` rule (behind the SDK's
//! `get_encrypted_commit`) for chains from before that scheduler, whose metadata has no
//! `SubtensorModule.LastEpochBlock` (such as subtensor spec 343): the reveal block from the
//! fixed formula `epoch = (block + netuid + 1) / (tempo + 1)`, the same offset and rounding
//! ([`legacy`]).
//!
//! # Sources read
//!
//! - bittensor-drand 2.0.0 (the PyPI source distribution; opentensor/bittensor-drand):
//!   `src/drand.rs` (`encrypt_and_compress`, `decrypt_and_decompress`, `encrypt_commitment`,
//!   `generate_commit_v2`, `WeightsTlockPayload`, `UserData`), `src/epoch_schedule.rs`,
//!   `src/epoch_schedule_vectors.rs`, `src/constants.rs`, `src/python_bindings.rs`.
//! - opentensor/subtensor: `pallets/drand/src/verifier.rs` (`QuicknetVerifier`) and
//!   `src/tests.rs` (quicknet's `/info` and round-1000 pulse), `pallets/commitments/src/lib.rs`
//!   (the reveal of `Data::TimelockEncrypted`), `pallets/subtensor/src/coinbase/
//!   reveal_commits.rs` (`WeightsTlockPayload` and the weights reveal),
//!   `coinbase/run_coinbase.rs` (`should_run_epoch`), `subnets/weights.rs`
//!   (`current_epoch_with_lookahead`, `MAX_COMMIT_REVEAL_PEROIDS`).
//! - timelock 0.0.1 (crates.io): `tlock.rs`, `ibe/fullident.rs`, `ibe/utils.rs`,
//!   `stream_ciphers.rs`, `curves/drand.rs`.
//! - bittensor-drand 1.x: `src/drand.rs` `generate_commit` (the GitHub tags v1.0.0 to v1.2.0
//!   and the PyPI 1.3.0 source distribution, all the same function), `src/python_bindings.rs`
//!   `get_encrypted_commit`, `tests/test_commit_reveal.py`; opentensor/subtensor at `3975359dd`
//!   (spec 343): `subnets/weights.rs` (`get_epoch_index`, `get_reveal_blocks`,
//!   `internal_commit_timelocked_weights`), `coinbase/reveal_commits.rs`
//!   (`reveal_crv3_commits`), `coinbase/run_coinbase.rs` (`blocks_until_next_epoch`).
//! - bittensor 10.5.0 (Python): `Subtensor.set_reveal_commitment`,
//!   `get_epoch_schedule_state`, `commit_timelocked_weights_extrinsic`,
//!   `decode_revealed_commitment`.
//!
//! # Where koth differs
//!
//! Only outside what the chain accepts: round 0, a zero tempo, a reveal period above
//! subtensor's maximum of 100 epochs, block arithmetic past u64, a negative or non-finite block
//! time, and a time before genesis are errors here
//! (bittensor-drand would wrap, loop or encrypt to round 0); [`decode_commitment_plaintext`]
//! is strict where the SDK's decoder is lenient.

mod drand;
pub mod epoch;
mod error;
pub mod legacy;
mod payload;
mod reveal;
mod tlock;

pub use drand::{
    randomness, round_message, verify_round_signature, DrandNetwork, PUBLIC_KEY_LEN,
    QUICKNET_CHAIN_HASH_HEX, QUICKNET_DST, QUICKNET_GENESIS_TIME, QUICKNET_PERIOD,
    QUICKNET_PUBLIC_KEY_HEX, QUICKNET_SCHEME_ID, SIGNATURE_LEN,
};
pub use epoch::{predict_first_reveal_block, EpochScheduleState};
pub use error::TimelockError;
pub use legacy::{legacy_encrypt_weights, legacy_weights_reveal, LegacyEpoch};
pub use payload::{commitment_plaintext, decode_commitment_plaintext, WeightsTlockPayload};
/// The randomness traits [`encrypt`] takes (rand_core 0.6, timelock's).
pub use rand_core;
pub use reveal::{
    commitment_reveal_round, encrypt_commitment, encrypt_weights, weights_reveal, WeightsReveal,
};
pub use tlock::{
    decrypt_with_signature, encrypt, encrypt_with_os_rng, encrypt_with_seed, SdkEnvelope,
    CIPHERTEXT_OVERHEAD, CIPHER_SUITE,
};
