//! `koth store …`: put, get, verify, list and collect content-addressed checkpoints.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use koth_core::Digest;
use koth_store::{
    manifest_of_dir, BlockingStore, GcOptions, GetOptions, Location, S3Options,
    DEFAULT_MAX_TOTAL_BYTES,
};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Store the checkpoint in DIR and print its digest.
    Put {
        /// Checkpoint directory (Hugging Face layout; only allowed files).
        dir: PathBuf,
        /// Where to store it: file:///absolute/path or s3://bucket/prefix.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Download checkpoint DIGEST into --out, verifying every file.
    Get {
        /// sha256:<64 hex>
        digest: String,
        #[arg(long)]
        from: String,
        /// Output directory; must not exist, be empty, or already hold exactly this checkpoint.
        #[arg(long)]
        out: PathBuf,
        /// Refuse checkpoints larger than this many bytes (manifest and stream).
        #[arg(long, default_value_t = DEFAULT_MAX_TOTAL_BYTES)]
        max_bytes: u64,
        /// Limit the download to this many bytes per second.
        #[arg(long)]
        max_rate: Option<u64>,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Re-read every file of DIGEST from the store and check its size and hash.
    Verify {
        digest: String,
        #[arg(long)]
        from: String,
        #[arg(long, default_value_t = DEFAULT_MAX_TOTAL_BYTES)]
        max_bytes: u64,
        #[command(flatten)]
        s3: S3Args,
    },
    /// List stored checkpoints: digest, total bytes, file count.
    Ls {
        #[arg(long)]
        from: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Delete blobs no manifest references (older than --min-age-secs).
    Gc {
        #[arg(long)]
        from: String,
        /// Keep unreferenced blobs younger than this: a put in progress writes its manifest last.
        #[arg(long, default_value_t = 3600)]
        min_age_secs: u64,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        s3: S3Args,
    },
    /// Print the digest of the checkpoint in DIR without storing it.
    Digest {
        dir: PathBuf,
        /// Also print the canonical manifest.
        #[arg(long)]
        manifest: bool,
    },
}

/// S3 connection settings; each falls back to the usual AWS environment variable.
#[derive(Args)]
pub struct S3Args {
    /// S3 endpoint, e.g. http://127.0.0.1:8333 (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    s3_region: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Allow plain http to a non-http:// endpoint (an http:// endpoint implies it).
    #[arg(long)]
    s3_allow_http: bool,
}

impl S3Args {
    fn options(&self) -> S3Options {
        let env = S3Options::from_env();
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone().or(env.region),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            session_token: env.session_token,
            allow_http: self.s3_allow_http || env.allow_http,
        }
    }
}

fn open(location: &str, s3: &S3Args) -> Result<BlockingStore> {
    let location: Location = location.parse().context("parsing the store location")?;
    BlockingStore::open(&location, &s3.options())
        .with_context(|| format!("opening store {location}"))
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .with_context(|| format!("checkpoint digest {s:?} (expected sha256:<64 hex>)"))
}

pub fn run(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Put { dir, to, s3 } => {
            let store = open(&to, &s3)?;
            let report = store
                .put(&dir)
                .with_context(|| format!("storing {} in {to}", dir.display()))?;
            eprintln!(
                "stored {} files, {} bytes ({} blobs sent, {} already stored) in {}",
                report.files,
                report.total_bytes,
                report.blobs_uploaded,
                report.blobs_already_stored,
                store.describe()
            );
            println!("{}", report.digest);
        }
        StoreCommand::Get {
            digest,
            from,
            out,
            max_bytes,
            max_rate,
            s3,
        } => {
            let digest = parse_digest(&digest)?;
            let store = open(&from, &s3)?;
            let opts = GetOptions {
                max_total_bytes: max_bytes,
                max_bytes_per_sec: max_rate,
            };
            let report = store
                .get(&digest, &out, &opts)
                .with_context(|| format!("fetching {digest} from {from} into {}", out.display()))?;
            if report.already_present {
                eprintln!("{} already holds {digest}", out.display());
            } else {
                eprintln!(
                    "fetched {digest}: {} files, {} bytes ({} downloaded, {} resumed) into {}",
                    report.files,
                    report.total_bytes,
                    report.downloaded_bytes,
                    report.resumed_bytes,
                    out.display()
                );
            }
            println!("{}", serde_json::to_string(&report)?);
        }
        StoreCommand::Verify {
            digest,
            from,
            max_bytes,
            s3,
        } => {
            let digest = parse_digest(&digest)?;
            let store = open(&from, &s3)?;
            let report = store
                .verify(&digest, max_bytes)
                .with_context(|| format!("verifying {digest} in {from}"))?;
            println!(
                "ok {digest}: {} files, {} bytes verified",
                report.files, report.total_bytes
            );
        }
        StoreCommand::Ls { from, json, s3 } => {
            let store = open(&from, &s3)?;
            let entries = store.list().with_context(|| format!("listing {from}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in entries {
                    match (&e.problem, e.total_bytes, e.files) {
                        (None, Some(bytes), Some(files)) => {
                            println!("{}\t{bytes}\t{files}", e.digest)
                        }
                        (problem, _, _) => println!(
                            "{}\tINVALID\t{}",
                            e.digest,
                            problem.as_deref().unwrap_or("unreadable")
                        ),
                    }
                }
            }
        }
        StoreCommand::Gc {
            from,
            min_age_secs,
            dry_run,
            s3,
        } => {
            let store = open(&from, &s3)?;
            let report = store
                .gc(&GcOptions {
                    min_age: Duration::from_secs(min_age_secs),
                    dry_run,
                })
                .with_context(|| format!("collecting garbage in {from}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        StoreCommand::Digest { dir, manifest } => {
            let m = manifest_of_dir(&dir, 4)
                .with_context(|| format!("hashing checkpoint {}", dir.display()))?;
            if manifest {
                eprint!("{}", String::from_utf8_lossy(&m.canonical_bytes()));
            }
            println!("{}", m.digest());
        }
    }
    Ok(())
}
