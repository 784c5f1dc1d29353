//! The loopback node's own checks against Bittensor's Python SDK
//! (scripts/subtensor/test_loopback_node.py): its storage answers decode with the SDK's
//! decoder and its client, and extrinsics the SDK builds are applied or refused as subtensor
//! does. The `Chain` contract (tests/chain_contract.rs) relies on the node being faithful.

mod support;

#[test]
fn the_loopback_node_passes_its_sdk_checks() {
    let python = support::bittensor_python();
    let out = std::process::Command::new(python)
        .arg(support::repo().join("scripts/subtensor/test_loopback_node.py"))
        .output()
        .expect("run scripts/subtensor/test_loopback_node.py");
    assert!(
        out.status.success(),
        "the loopback node's SDK checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
