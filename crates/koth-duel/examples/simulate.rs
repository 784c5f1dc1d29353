//! The duel simulator without the `koth` binary (which also builds the model stack):
//!
//! cargo run --release -p koth-duel --example simulate -- --preset false-crown --reps 10000
//!
//! Flags mirror `koth duel simulate`: --preset false-crown|mix, --distribution NAME (mix),
//! --reps, --alpha, --delta, --sigma, --batch, --n-max, --n, --resamples, --min-n,
//! --target-n, --futility-alpha, --threads, --seed, --json.

use std::process::ExitCode;

use koth_core::verdict::RuleSpec;
use koth_duel::simulate::{self, Distribution, PresetParams};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = PresetParams::default();
    let mut preset = "false-crown".to_string();
    let mut distribution = Distribution::SkewLeft;
    let mut json = false;
    let (mut min_n, mut target_n, mut futility_alpha) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "--json" {
            json = true;
            i += 1;
            continue;
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        let int = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a count"))
        };
        match flag {
            "--preset" => preset = value,
            "--distribution" => {
                distribution = Distribution::parse(&value)
                    .ok_or_else(|| format!("--distribution: unknown {value:?}"))?
            }
            "--reps" => p.reps = int(&value)?,
            "--alpha" => p.alpha = num(&value)?,
            "--delta" => p.delta = num(&value)?,
            "--sigma" => p.sigma = num(&value)?,
            "--batch" => p.batch = int(&value)? as usize,
            "--n-max" => p.sequential_n_max = int(&value)?,
            "--n" => p.bootstrap_n = int(&value)?,
            "--resamples" => p.resamples = int(&value)? as u32,
            "--threads" => p.threads = int(&value)? as usize,
            "--seed" => p.seed = value,
            "--min-n" => min_n = Some(int(&value)?),
            "--target-n" => target_n = Some(int(&value)?),
            "--futility-alpha" => futility_alpha = Some(num(&value)?),
            other => return Err(format!("unknown flag {other}")),
        }
        i += 2;
    }
    let mut config = match preset.as_str() {
        "false-crown" => p.false_crown(),
        "mix" => p.mix(distribution),
        other => return Err(format!("--preset: unknown {other:?} (false-crown or mix)")),
    };
    for rule in &mut config.rules {
        if let RuleSpec::Sequential {
            min_n: m,
            target_n: t,
            futility_alpha: f,
            ..
        } = &mut rule.spec
        {
            *m = min_n.unwrap_or(*m);
            *t = target_n.unwrap_or(*t);
            *f = futility_alpha.unwrap_or(*f);
        }
    }
    let start = std::time::Instant::now();
    let report = simulate::run(&config).map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.to_markdown());
    }
    eprintln!("({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}
