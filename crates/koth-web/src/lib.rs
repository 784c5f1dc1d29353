//! koth's dashboard (`koth-web`): the hill as web pages, served by the validator.
//!
//! - [`render`]: pure functions from the validator's state (plus facts folded from its event
//!   log, the verdict records and the chain's emission) to HTML; the king, the lineage of kings
//!   with held-out loss per reign, the live duel with μ̂ and its confidence bounds against δ
//!   batch by batch, the queue, the history with every error code explained in words, the
//!   rewards and why, and a page per hotkey. Charts are server-side SVG ([`svg`]), so every
//!   page renders without JavaScript.
//! - [`facts`]: the fold over logged events that derives what the state does not keep.
//! - [`verdicts`]: reading a duel's verdict record, checked against its digest.
//! - [`server`]: [`router`], the `axum::Router` the validator merges next to its feeds, with an
//!   embedded stylesheet and a small script that subscribes to `/api/events` and swaps in the
//!   page's changing part. Nothing is fetched from another origin (the pages' CSP forbids it).

pub mod facts;
pub mod html;
pub mod render;
pub mod server;
pub mod svg;
pub mod verdicts;

pub use render::{EmissionRow, EmissionView, PageData};
pub use server::{router, WebConfig, CONTENT_SECURITY_POLICY};
