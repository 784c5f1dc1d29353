//! `koth model …`: create, inspect, score and differentiate Hugging Face checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use koth_core::npy::{NpyArray, NpyData};
use koth_model::{Model, ModelConfig, TokenIds};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a fresh, seeded random model in Hugging Face layout.
    Init {
        /// config.json of the architecture (llama, qwen2, qwen3 or qwen3_moe).
        #[arg(long)]
        config: PathBuf,
        /// Seed of the initialisation (same seed, same weights on every machine).
        #[arg(long)]
        seed: u64,
        /// Output directory (created; must not already hold files).
        #[arg(long)]
        out: PathBuf,
        /// Stored dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Split the weights into shards of at most this many bytes.
        #[arg(long, default_value_t = koth_model::DEFAULT_SHARD_LIMIT_BYTES)]
        shard_bytes: u64,
    },
    /// Per-token next-token NLL of token ids: writes f32 [B, T-1] .npy.
    Nll {
        /// Checkpoint directory.
        #[arg(long)]
        model: PathBuf,
        /// Token ids, .npy int64 / int32 / uint32 [B, T].
        #[arg(long)]
        ids: PathBuf,
        /// Output .npy (f32 [B, T-1]).
        #[arg(long)]
        out: PathBuf,
        /// cpu, cuda or cuda:N; a comma-separated list splits the model into that many stages
        /// of about equal layers, one per device (cuda:0,cuda:0: two virtual stages on one GPU).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Compute dtype: f32, bf16 or f16 (the NLL is always accumulated and written in f32).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Use the differentiable (composite-op) path instead of the fused kernels (the same
        /// as `--path composite`).
        #[arg(long, conflicts_with = "path")]
        composite: bool,
        /// The op path: `auto` (koth's GPU kernels on CUDA, candle's fused ops elsewhere),
        /// `fused`, `composite` or `kernels` (CUDA builds only).
        #[arg(long, default_value = "auto")]
        path: String,
    },
    /// Gradients of the mean NLL with respect to every parameter: f32 safetensors, HF names.
    Grads {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        ids: PathBuf,
        /// Output .safetensors.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// The differentiable path: `auto` (koth's GPU kernels on CUDA, the composites
        /// elsewhere), `composite` or `kernels` (CUDA builds only).
        #[arg(long, default_value = "auto")]
        path: String,
    },
    /// Place a duel's two models (king and challenger) across the GPUs of one host by memory,
    /// and print each GPU's stages and predicted peak (see docs/SCALE.md).
    Plan(PlanArgs),
    /// Family, parameter count, bytes and dtype of a checkpoint (reads headers only, checks the
    /// tensor set against config.json).
    Info {
        /// Checkpoint directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Init {
            config,
            seed,
            out,
            dtype,
            shard_bytes,
        } => init(&config, seed, &out, &dtype, shard_bytes),
        ModelCommand::Nll {
            model,
            ids,
            out,
            device,
            dtype,
            composite,
            path,
        } => nll(&model, &ids, &out, &device, &dtype, composite, &path),
        ModelCommand::Grads {
            model,
            ids,
            out,
            device,
            dtype,
            path,
        } => grads(&model, &ids, &out, &device, &dtype, &path),
        ModelCommand::Info { dir, json } => info(&dir, json),
        ModelCommand::Plan(a) => plan(&a),
    }
}

fn init(config: &Path, seed: u64, out: &Path, dtype: &str, shard_bytes: u64) -> Result<()> {
    let dtype = koth_model::parse_dtype(dtype).context("--dtype")?;
    let cfg = ModelConfig::from_file(config).context("--config")?;
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("--out {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {}: directory is not empty; refusing to overwrite",
                out.display()
            );
        }
    }
    let model = Model::init(&cfg, seed, dtype, &koth_model::Device::Cpu)
        .with_context(|| format!("initialising {}", config.display()))?;
    model
        .save_with_shard_limit(out, shard_bytes)
        .with_context(|| format!("saving to {}", out.display()))?;
    let i = model.info();
    println!(
        "{}: {} model, {} parameters, {}, seed {seed}",
        out.display(),
        i.family,
        i.parameters,
        i.dtype
    );
    Ok(())
}

fn read_ids(path: &Path) -> Result<TokenIds> {
    let file = std::fs::File::open(path).with_context(|| format!("--ids {}", path.display()))?;
    let arr = NpyArray::read(std::io::BufReader::new(file))
        .with_context(|| format!("--ids {}", path.display()))?;
    let [rows, cols] = arr.shape[..] else {
        bail!(
            "--ids {}: expected a 2-D [B, T] array, found shape {:?}",
            path.display(),
            arr.shape
        );
    };
    let ids = arr
        .to_token_ids()
        .with_context(|| format!("--ids {}", path.display()))?;
    TokenIds::new(ids, rows, cols).with_context(|| format!("--ids {}", path.display()))
}

/// Every id of the `--ids` file must be below the model's vocab_size; the error names the file,
/// the offending id, its [row, position] and the model whose config sets the vocabulary.
fn check_vocab(ids: &TokenIds, ids_path: &Path, m: &Model, model: &Path) -> Result<()> {
    ids.check_vocab(m.config().vocab_size).with_context(|| {
        format!(
            "--ids {} against {}",
            ids_path.display(),
            model.join("config.json").display()
        )
    })
}

/// `--device` is one device, or a list: the model cut into that many stages of about equal
/// layers, stage `i` on the `i`-th device (`cuda:0,cuda:0`: two virtual stages on one GPU).
fn load(model: &Path, device: &str, dtype: &str) -> Result<Model> {
    let devices = koth_model::parse_devices(device).context("--device")?;
    let dtype = koth_model::parse_dtype(dtype).context("--dtype")?;
    let context = || format!("--model {}", model.display());
    if let [one] = devices.as_slice() {
        return Model::load(model, dtype, one).with_context(context);
    }
    let config = ModelConfig::from_file(&model.join("config.json")).with_context(context)?;
    let placement = koth_model::Placement::even(config.num_hidden_layers, &devices)
        .with_context(|| format!("--device {device}"))?;
    Model::load_placed(model, dtype, placement).with_context(context)
}

/// Write `out` through `write` with [`koth_core::fsutil::write_atomic_with`]: a failure never
/// leaves a half-written output, and a finished one is fsynced with its directory.
fn write_atomically(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    koth_core::fsutil::write_atomic_with(out, write)
        .with_context(|| format!("--out {}", out.display()))
}

/// `--path`: `auto` is the model's own choice for the operation at hand.
pub fn parse_path(s: &str, auto: koth_model::OpPath) -> Result<koth_model::OpPath> {
    use koth_model::OpPath;
    Ok(match s {
        "auto" => auto,
        "fused" => OpPath::Fused,
        "composite" => OpPath::Composite,
        "kernels" => {
            anyhow::ensure!(
                koth_model::kernels_compiled(),
                "--path kernels: this build has no GPU kernels (scripts/cuda-build.sh builds them)"
            );
            OpPath::Kernels
        }
        other => anyhow::bail!("--path `{other}` is not one of auto, fused, composite, kernels"),
    })
}

#[allow(clippy::too_many_arguments)]
fn nll(
    model: &Path,
    ids: &Path,
    out: &Path,
    device: &str,
    dtype: &str,
    composite: bool,
    path: &str,
) -> Result<()> {
    let ids_path = ids;
    let ids = read_ids(ids_path)?;
    let m = load(model, device, dtype)?;
    check_vocab(&ids, ids_path, &m, model)?;
    let path = if composite {
        koth_model::OpPath::Composite
    } else {
        parse_path(path, m.scoring_path())?
    };
    let nll = m
        .nll_with(&ids, path, koth_model::ScoreOptions::default())
        .with_context(|| format!("scoring --ids with {}", model.display()))?;
    let shape = nll.dims().to_vec();
    let values = nll
        .to_device(&koth_model::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mean = values.iter().map(|&x| x as f64).sum::<f64>() / values.len().max(1) as f64;
    let arr = NpyArray {
        shape: shape.clone(),
        data: NpyData::F32(values),
    };
    write_atomically(out, |tmp| {
        let f = std::fs::File::create(tmp).with_context(|| format!("--out {}", out.display()))?;
        let mut w = std::io::BufWriter::new(f);
        arr.write(&mut w)
            .with_context(|| format!("--out {}", out.display()))?;
        std::io::Write::flush(&mut w).with_context(|| format!("--out {}", out.display()))?;
        Ok(())
    })?;
    println!("{}: nll {:?}, mean {mean:.6}", out.display(), shape);
    Ok(())
}

fn grads(
    model: &Path,
    ids: &Path,
    out: &Path,
    device: &str,
    dtype: &str,
    path: &str,
) -> Result<()> {
    let ids_path = ids;
    let ids = read_ids(ids_path)?;
    let m = load(model, device, dtype)?;
    check_vocab(&ids, ids_path, &m, model)?;
    let path = parse_path(path, m.training_path())?;
    anyhow::ensure!(
        path != koth_model::OpPath::Fused,
        "--path fused has no gradients; use composite or kernels"
    );
    let (loss, grads) = m
        .loss_and_grads_with(&ids, path)
        .with_context(|| format!("differentiating {} on --ids", model.display()))?;
    write_atomically(out, |tmp| {
        koth_model::weights::write_safetensors(tmp, &grads)
            .with_context(|| format!("--out {}", out.display()))
    })?;
    let norm =
        koth_model::global_grad_norm(&grads.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>())?;
    println!(
        "{}: {} gradients, loss {loss:.6}, global norm {norm:.6}",
        out.display(),
        grads.len()
    );
    Ok(())
}

fn info(dir: &Path, json: bool) -> Result<()> {
    let i = koth_model::model::inspect(dir).with_context(|| format!("{}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        println!("family      {}", i.family);
        println!("parameters  {}", i.parameters);
        println!("bytes       {}", i.bytes);
        println!("dtype       {}", i.dtype);
        println!("layers      {}", i.layers);
        println!("hidden      {}", i.hidden_size);
        println!("vocab       {}", i.vocab_size);
        if let Some(e) = i.experts {
            println!("experts     {e}");
        }
        println!("tied        {}", i.tied_embeddings);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// config.json of the architecture.
    #[arg(long)]
    config: PathBuf,
    /// GPUs on the host.
    #[arg(long)]
    gpus: usize,
    /// Memory per GPU, e.g. 141GiB, 80GB, 143771MiB.
    #[arg(long, default_value = "141GiB")]
    gpu_mem: String,
    /// `disjoint` (king on the first half, challenger on the second), `interleaved` (stage i
    /// of both on GPU i), or `both`.
    #[arg(long, default_value = "both")]
    layout: String,
    /// Sequences per micro-batch and tokens per sequence.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 2048)]
    seq: usize,
    /// Bytes per parameter: bf16 (2) or f32 (4).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// MiB of logits the chunked head holds at once.
    #[arg(long, default_value_t = 512)]
    logits_chunk_mib: u64,
    /// GiB per GPU taken by the runtime before any tensor.
    #[arg(long, default_value_t = 2.0)]
    reserve_gib: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `141GiB`, `80GB`, `143771MiB`, or plain bytes.
fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("`{s}`: expected a size such as 141GiB"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            anyhow::bail!("`{s}`: unknown unit `{other}` (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
        }
    };
    anyhow::ensure!(
        value.is_finite() && value > 0.0,
        "`{s}`: the size must be positive"
    );
    Ok((value * scale) as u64)
}

fn plan(a: &PlanArgs) -> Result<()> {
    use koth_model::plan::{plan, Layout, PlanRequest};
    let config = koth_model::ModelConfig::from_file(&a.config)
        .with_context(|| format!("--config {}", a.config.display()))?;
    let gpu_mem_bytes = parse_bytes(&a.gpu_mem).context("--gpu-mem")?;
    let dtype_bytes = match a.dtype.as_str() {
        "bf16" | "f16" => 2,
        "f32" => 4,
        other => anyhow::bail!("--dtype `{other}` is not one of bf16, f16, f32"),
    };
    let layouts = match a.layout.as_str() {
        "disjoint" => vec![Layout::Disjoint],
        "interleaved" => vec![Layout::Interleaved],
        "both" => vec![Layout::Disjoint, Layout::Interleaved],
        other => anyhow::bail!("--layout `{other}` is not one of disjoint, interleaved, both"),
    };
    anyhow::ensure!(
        a.reserve_gib.is_finite() && a.reserve_gib >= 0.0,
        "--reserve-gib must be a non-negative number"
    );
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut plans = Vec::new();
    for layout in layouts {
        let req = PlanRequest {
            gpus: a.gpus,
            gpu_mem_bytes,
            dtype_bytes,
            batch: a.batch,
            seq: a.seq,
            logits_chunk_bytes: a.logits_chunk_mib << 20,
            reserve_bytes: (a.reserve_gib * (1u64 << 30) as f64) as u64,
            layout,
        };
        plans.push(plan(&config, &req).with_context(|| format!("planning {layout:?}"))?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plans)?);
        return Ok(());
    }
    println!(
        "{}: {} parameters ({:.1} GiB per model in {}), {} GPUs of {:.1} GiB, micro-batch {}×{}",
        a.config.display(),
        config.parameter_count(),
        gib(config.parameter_count() * dtype_bytes),
        a.dtype,
        a.gpus,
        gib(gpu_mem_bytes),
        a.batch,
        a.seq
    );
    for p in &plans {
        println!(
            "\n{:?} layout: {}",
            p.layout,
            if p.fits { "fits" } else { "DOES NOT FIT" }
        );
        println!("  gpu  stages                                        weights   activations  predicted peak");
        for g in 0..a.gpus {
            let on: Vec<_> = p.stages.iter().filter(|s| s.gpu == g).collect();
            let names: Vec<String> = on
                .iter()
                .map(|s| {
                    format!(
                        "{} L{}-{}{}{}",
                        if s.model == 0 { "king" } else { "chal" },
                        s.layers.start,
                        s.layers.end - 1,
                        if s.embed { "+emb" } else { "" },
                        if s.head { "+head" } else { "" }
                    )
                })
                .collect();
            let weights: u64 = on.iter().map(|s| s.weight_bytes).sum();
            let acts: u64 = on.iter().map(|s| s.activation_bytes).sum();
            println!(
                "  {g:>3}  {:<44} {:>7.1} GiB {:>8.1} GiB {:>9.1} GiB",
                names.join(", "),
                gib(weights),
                gib(acts),
                gib(p.peak_bytes[g])
            );
        }
    }
    Ok(())
}
