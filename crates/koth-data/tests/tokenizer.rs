//! Tokenizers: GPT-2 ids against tiktoken's r50k, loading tokenizer.json files, BPE training.

mod common;

use koth_data::tokenizer::{train_byte_level_bpe, ENDOFTEXT, GPT2_EOS_ID};
use koth_data::Tokenizer;

#[test]
fn gpt2_ids_match_tiktoken_r50k() {
    // Ids from tiktoken.get_encoding("r50k_base").encode(...).
    let t = Tokenizer::gpt2();
    let cases: &[(&str, &[u32])] = &[
        ("Hello world", &[15496, 995]),
        ("hello world", &[31373, 995]),
        (
            "The quick brown fox jumps over the lazy dog",
            &[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290],
        ),
        ("!", &[0]),
        (" the", &[262]),
    ];
    for (text, ids) in cases {
        assert_eq!(t.encode(text).unwrap(), *ids, "{text:?}");
        assert_eq!(t.decode(ids).unwrap(), *text);
    }
    let id = t.identity();
    assert_eq!(
        (id.name.as_str(), id.vocab_size, id.eos_id),
        ("gpt2-r50k", 50257, GPT2_EOS_ID)
    );
    // The identity hash is pinned: it is written into every GPT-2 manifest, so a change in
    // tiktoken-rs's r50k vocabulary or in our canonical encoding of it must fail here (and then
    // every existing GPT-2 manifest would need re-ingesting).
    assert_eq!(
        id.sha256.to_string(),
        "sha256:5727a2b962c42b0700f0eee364fd2258c05c506b211f8748ab454d80c1a5d581"
    );
    assert!(Tokenizer::load("gpt2", Some("</s>")).is_err());
}

#[test]
fn trained_bpe_round_trips_and_is_deterministic() {
    let corpus: Vec<String> = (0..20).map(|i| common::text(i, 60)).collect();
    let json = train_byte_level_bpe(corpus.iter(), 400, 2).unwrap();
    let again = train_byte_level_bpe(corpus.iter(), 400, 2).unwrap();
    assert_eq!(
        json, again,
        "training the same corpus twice gave different tokenizers"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(&dir.path().join("tok.json"), &json);
    let t = Tokenizer::load(path.to_str().unwrap(), None).unwrap();
    let id = t.identity();
    assert_eq!(id.name, "file:tok.json");
    assert_eq!(id.eos_token, ENDOFTEXT);
    assert_eq!(id.eos_id, 0);
    assert!(
        id.vocab_size <= 400 && id.vocab_size > 257,
        "{}",
        id.vocab_size
    );
    // Round trip, including text the corpus never had (bytes, unicode, newlines).
    for text in [
        corpus[3].as_str(),
        "Zebra quagga: naïve café ☃\n\ttabs  and   spaces",
        "",
    ] {
        let ids = t.encode(text).unwrap();
        assert!(ids.iter().all(|&i| i < id.vocab_size));
        assert_eq!(t.decode(&ids).unwrap(), text);
    }
    // Merges learned: common words are single tokens, so text compresses below one id a byte.
    let ids = t.encode(&corpus[0]).unwrap();
    assert!(
        ids.len() * 2 < corpus[0].len(),
        "{} ids for {} bytes",
        ids.len(),
        corpus[0].len()
    );
    // The special token in text is not the EOS id.
    assert!(!t.encode(ENDOFTEXT).unwrap().contains(&0));
    // Too small a vocabulary is refused.
    assert!(train_byte_level_bpe(corpus.iter(), 100, 2).is_err());
}

#[test]
fn tokenizer_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = common::write(&dir.path().join("bad.json"), "{\"not\": \"a tokenizer\"}");
    let msg = Tokenizer::load(bad.to_str().unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad.json"), "{msg}");
    let json = train_byte_level_bpe([common::text(1, 50)].iter(), 300, 2).unwrap();
    let path = common::write(&dir.path().join("t.json"), &json);
    let msg = Tokenizer::load(path.to_str().unwrap(), Some("<eos>"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("<eos>"), "{msg}");
    let missing = dir.path().join("nope.json");
    assert!(Tokenizer::load(missing.to_str().unwrap(), None).is_err());
}
