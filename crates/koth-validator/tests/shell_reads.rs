//! The shell never reads the state to decide (issue 15). In `src/shell.rs` the journal's state
//! is read only to hand it to the rules (`observe::events`, which turns what the shell observed
//! into the events to log) and to publish it to the feeds. A new read there (a query to decide
//! whether to log, a state field copied into an event) fails this test: the decision belongs in
//! koth-hill, where it is pure and unit-tested.

use std::path::Path;

/// What a line (or the one before it, where rustfmt wrapped the call) that reads the state may
/// be doing with it.
const ALLOWED: [&str; 3] = ["observe::events(", ".publish(", "FeedHub::new("];

/// The state's queries that decide what to log: only the rules ask them.
const RULES_ONLY: [&str; 3] = ["needs_intake", "held_due", "release_block"];

fn code_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn the_shell_reads_the_state_only_to_hand_it_to_the_rules_or_publish_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shell.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = code_lines(&text);
    let mut reads = 0;
    let mut bad = Vec::new();
    for (k, (n, line)) in lines.iter().enumerate() {
        if !line.contains(".state()") && !line.contains("ValidatorState") {
            continue;
        }
        reads += 1;
        let before = k.checked_sub(1).map_or("", |j| lines[j].1.as_str());
        if !ALLOWED
            .iter()
            .any(|a| line.contains(a) || before.contains(a))
        {
            bad.push(format!("shell.rs:{n}: {}", line.trim()));
        }
    }
    for (n, line) in &lines {
        for q in RULES_ONLY {
            if line.contains(q) {
                bad.push(format!(
                    "shell.rs:{n}: asks the state `{q}`: {}",
                    line.trim()
                ));
            }
        }
    }
    assert!(
        reads > 0,
        "shell.rs no longer reads the state: update this test"
    );
    assert!(
        bad.is_empty(),
        "the shell reads the state to decide; move the decision into koth-hill \
         (koth_hill::observe):\n{}",
        bad.join("\n")
    );
}
