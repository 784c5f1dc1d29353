//! Property tests of the parsers that read strangers' bytes (a commitment payload, a checkpoint
//! manifest, a `.npy` header and file): on any input they return, never panic, and allocate at
//! most a small multiple of the input while parsing. (The safetensors header parser has its own,
//! in `src/safetensors.rs`.)
//!
//! Memory is measured by a counting global allocator, per thread, so parallel tests do not
//! disturb each other.

use koth_core::checkpoint::CheckpointManifest;
use koth_core::{npy, CommitmentPayload, NpyArray};
use proptest::prelude::*;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::peak_during;

/// What a parser may allocate for `n` input bytes: a small multiple plus a constant for the
/// error's message.
fn bound(n: usize) -> usize {
    16 * n + 64 * 1024
}

fn npy_file(header_text: &str, body: &[u8]) -> Vec<u8> {
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend_from_slice(&(header_text.len() as u16).to_le_bytes());
    f.extend_from_slice(header_text.as_bytes());
    f.extend_from_slice(body);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn payloads_never_panic(s in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, peak) = peak_during(|| s.parse::<CommitmentPayload>());
        prop_assert!(peak <= bound(s.len()), "{peak} bytes for {} input", s.len());
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        let _ = lossy.parse::<CommitmentPayload>();
    }

    #[test]
    fn payload_like_strings_never_panic(
        loc in "(file://|s3://)?[a-z/.]{0,20}",
        hex in "[0-9a-f]{0,70}",
        hotkey in "[1-9A-Za-z]{0,60}",
        sep in "[|,]",
    ) {
        let s = format!("v4{sep}{loc}{sep}sha256:{hex}{sep}{hotkey}");
        let (_, peak) = peak_during(|| s.parse::<CommitmentPayload>());
        prop_assert!(peak <= bound(s.len()));
    }

    #[test]
    fn manifests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (_, peak) = peak_during(|| CheckpointManifest::from_canonical_bytes(&bytes));
        prop_assert!(peak <= bound(bytes.len()), "{peak} bytes for {} input", bytes.len());
    }

    #[test]
    fn manifest_like_json_never_panics(
        path in "[a-z._/-]{0,30}",
        size in any::<u64>(),
        hex in "[0-9a-f]{0,70}",
        n in 0usize..50,
    ) {
        let file = format!(r#"{{"path":"{path}","sha256":"{hex}","size":{size}}}"#);
        let files = vec![file; n].join(",");
        let text = format!(r#"{{"files":[{files}],"version":1}}"#);
        let (parsed, peak) = peak_during(|| CheckpointManifest::from_canonical_bytes(text.as_bytes()));
        prop_assert!(peak <= bound(text.len()));
        if let Ok(m) = parsed {
            // Accepted means canonical: the bytes are exactly what it would write.
            prop_assert_eq!(m.canonical_bytes(), text.into_bytes());
        }
    }

    #[test]
    fn npy_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, peak) = peak_during(|| NpyArray::from_bytes(&bytes));
        prop_assert!(peak <= bound(bytes.len()));
        let _ = npy::parse_header(&bytes);
    }

    /// Headers with any shape (huge, overflowing, empty) and any body length: never a panic, and
    /// nothing is allocated from the declared shape — only from the bytes actually there.
    #[test]
    fn npy_declared_shapes_never_size_an_allocation(
        dims in proptest::collection::vec(any::<u64>(), 0..4),
        descr in prop::sample::select(vec!["<u4", "<i4", "<i8", "<f4", "<f8", "|u1", ">f4"]),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let shape = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!("({})", shape.join(", ")),
        };
        let text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let file = npy_file(&text, &body);
        let (parsed, peak) = peak_during(|| NpyArray::from_bytes(&file));
        prop_assert!(peak <= bound(file.len()), "{peak} bytes for {} input", file.len());
        if let Ok(a) = parsed {
            // Accepted only when the body holds exactly the declared elements (each >= 1 byte).
            prop_assert!(a.shape.iter().product::<usize>() <= body.len());
        }
    }
}
