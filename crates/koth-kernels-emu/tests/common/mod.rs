//! Helpers shared by the emulated-kernel tests.
#![allow(dead_code)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::ptr::null_mut;

use koth_kernels_emu::{ffi, BF16, F32};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn to_bf16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&a| half::bf16::from_f32(a).to_bits())
        .collect()
}

pub fn from_bf16(x: &[u16]) -> Vec<f32> {
    x.iter()
        .map(|&a| half::bf16::from_bits(a).to_f32())
        .collect()
}

/// max |a - r| / max(1, max |r|), and asserts it is within `tol`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, r| m.max(r.abs()));
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &r)) in got.iter().zip(want).enumerate() {
        let e = if a.is_finite() {
            (a as f64 - r).abs() / scale
        } else {
            f64::INFINITY
        };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: error {:.3e} > {tol:.1e} at {} (kernel {}, reference {})",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&a| a as f64).collect()
}

/// Whether `a` and `b` hold the same floats, bit for bit.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The gradient autograd found for `v`, flattened, in f64.
pub fn grad_f64(grads: &GradStore, v: &Var) -> Vec<f64> {
    grads
        .get(v.as_tensor())
        .expect("a gradient")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn cpu(x: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(x.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Runs a kernel on f32 or bf16 host copies of `inputs` and returns its output as f32.
pub fn run_typed(
    dtype: DType,
    inputs: &[&[f32]],
    out_len: usize,
    launch: impl FnOnce(i32, &[u64], u64) -> i32,
) -> Vec<f32> {
    match dtype {
        DType::F32 => {
            let mut out = vec![f32::NAN; out_len];
            let ptrs: Vec<u64> = inputs.iter().map(|x| x.as_ptr() as u64).collect();
            assert_eq!(launch(F32, &ptrs, out.as_mut_ptr() as u64), 0);
            out
        }
        DType::BF16 => {
            let held: Vec<Vec<u16>> = inputs.iter().map(|x| to_bf16(x)).collect();
            let mut out = vec![0x7fc0u16; out_len];
            let ptrs: Vec<u64> = held.iter().map(|x| x.as_ptr() as u64).collect();
            assert_eq!(launch(BF16, &ptrs, out.as_mut_ptr() as u64), 0);
            from_bf16(&out)
        }
        other => panic!("no test dtype {other:?}"),
    }
}

/// Exact in f32 up to an ulp of the transcendental functions; in bf16 within one unit of the
/// last place.
pub fn assert_same_rounding(what: &str, got: &[f32], want: &[f32], dtype: DType) {
    let ulp = if dtype == DType::BF16 {
        1.0 / 128.0
    } else {
        4e-7
    };
    for (i, (&a, &r)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - r).abs() <= r.abs() * ulp + 1e-7,
            "{what} {dtype:?} element {i}: kernel {a}, CPU {r}"
        );
    }
}

/// `rmsnorm_fwd` on `[x, w]` (`p`) into `out` ([rows, cols] of `code`'s dtype), keeping no
/// reciprocal RMS: a `run_typed` launch.
pub fn rmsnorm_fwd(code: i32, p: &[u64], out: u64, rows: usize, cols: usize, eps: f32) -> i32 {
    // SAFETY: x and out [rows, cols], w [cols], of `code`'s dtype (the caller's run_typed
    // buffers); a null rstd is not written.
    unsafe {
        ffi::koth_rmsnorm_fwd(
            code,
            p[0],
            p[1],
            out,
            0,
            rows as i64,
            cols as i32,
            eps,
            null_mut(),
        )
    }
}

/// `rmsnorm_centered_fwd` on `[x, w]` (`p`) into `out`: a `run_typed` launch.
pub fn rmsnorm_centered_fwd(
    code: i32,
    p: &[u64],
    out: u64,
    rows: usize,
    cols: usize,
    eps: f32,
) -> i32 {
    // SAFETY: x and out [rows, cols], w [cols], of `code`'s dtype.
    unsafe {
        ffi::koth_rmsnorm_centered_fwd(
            code,
            p[0],
            p[1],
            out,
            rows as i64,
            cols as i32,
            eps,
            null_mut(),
        )
    }
}
