//! The CUDA emulator itself: barriers and shuffles give every thread what a GPU would, and the
//! faults a GPU would hang on or corrupt memory with stop the process with a message.

use std::process::Command;

use koth_kernels_emu::selftest;

#[test]
fn barriers_and_shuffles_exchange_every_value() {
    for (blocks, threads) in [(1usize, 32usize), (3, 96), (2, 1024)] {
        let input: Vec<f32> = (0..blocks * threads).map(|i| (i % 97) as f32).collect();
        let mut out = vec![f32::NAN; input.len()];
        // SAFETY: both buffers hold blocks * threads floats.
        let code = unsafe {
            selftest::koth_emu_block_total(
                input.as_ptr(),
                out.as_mut_ptr(),
                blocks as i32,
                threads as i32,
            )
        };
        assert_eq!(code, 0);
        for b in 0..blocks {
            let want: f32 = input[b * threads..(b + 1) * threads].iter().sum();
            assert!(
                out[b * threads..(b + 1) * threads]
                    .iter()
                    .all(|&x| x == want),
                "block {b} of {blocks}x{threads}: every thread should see {want}"
            );
        }
    }
}

#[test]
fn an_oversized_block_is_refused_with_an_error_code() {
    // SAFETY: the launch is refused before any argument is touched.
    let code = unsafe { selftest::koth_emu_too_many_threads() };
    assert_eq!(code, 9, "cudaErrorInvalidConfiguration");
}

/// Runs `fault` in a child process (this test binary, one test) and returns its stderr; the
/// child must die, not pass.
fn in_child(fault: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_fault",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KOTH_EMU_FAULT", fault)
        .output()
        .expect("run the child");
    assert!(
        !out.status.success(),
        "{fault}: the child should have been stopped"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Not a check by itself: the child body of the two fault tests below, run only by them (it is
/// ignored in a plain run, where it would check nothing).
#[test]
#[ignore = "the child process of the fault tests; run by them"]
fn child_fault() {
    let mut out = [0f32; 64];
    // SAFETY: `out` holds the 64 floats the kernel writes; the overrun writes into the
    // emulator's guard bytes, which it then checks.
    match std::env::var("KOTH_EMU_FAULT").as_deref() {
        Ok("divergent") => unsafe {
            selftest::koth_emu_divergent_shuffle(out.as_mut_ptr());
        },
        Ok("overrun") => unsafe {
            selftest::koth_emu_shared_overrun(8);
        },
        _ => {}
    }
}

#[test]
fn a_shuffle_some_lanes_never_reach_is_reported() {
    let err = in_child("divergent");
    assert!(
        err.contains("a warp shuffle that some lanes of the warp never reach"),
        "stderr: {err}"
    );
}

#[test]
fn a_write_past_dynamic_shared_memory_is_reported() {
    let err = in_child("overrun");
    assert!(
        err.contains("a write past the block's dynamic shared memory"),
        "stderr: {err}"
    );
}
