//! Small, pure helpers for writing HTML by hand: escaping (every string that reaches a page goes
//! through [`esc`]; locations and gate messages are written by strangers), number and time
//! formatting.

use std::fmt::Write as _;

/// `text` escaped for HTML element content and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for one URL path segment (everything but unreserved characters).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A float for people: fixed `decimals`, "—" when absent, "n/a" when not finite.
pub fn num(x: Option<f64>, decimals: usize) -> String {
    match x {
        None => "—".to_string(),
        Some(v) if !v.is_finite() => "n/a".to_string(),
        Some(v) => format!("{v:.decimals$}"),
    }
}

/// A signed float with an explicit sign (μ̂ and bounds read better that way).
pub fn signed(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) if v.is_finite() && v >= 0.0 => format!("+{v:.decimals$}"),
        other => num(other, decimals),
    }
}

/// A digest shortened for tables (`sha256:1234abcd…`); the full value goes into `title`.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) if hex.chars().count() > 12 => {
            format!("{algo}:{}…", hex.chars().take(12).collect::<String>())
        }
        _ => d.to_string(),
    }
}

/// An SS58 hotkey shortened for tables.
pub fn short_key(k: &str) -> String {
    if k.chars().count() > 14 {
        let head: String = k.chars().take(8).collect();
        let tail: String = k
            .chars()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}…{tail}")
    } else {
        k.to_string()
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian, no time-zone data).
pub fn utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A duration in words, coarse: "3 h 12 min", "45 s".
pub fn duration_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{} h {} min", s / 3600, (s / 60) % 60)
    } else {
        format!("{} d {} h", s / 86_400, (s / 3600) % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(url_segment("5Grw a/b?c"), "5Grw%20a%2Fb%3Fc");
        assert_eq!(url_segment("ü"), "%C3%BC");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn numbers_and_shortening() {
        assert_eq!(num(None, 3), "—");
        assert_eq!(num(Some(f64::NAN), 3), "n/a");
        assert_eq!(signed(Some(0.5), 2), "+0.50");
        assert_eq!(signed(Some(-0.5), 2), "-0.50");
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab…"
        );
        assert_eq!(short_digest("odd"), "odd");
        assert_eq!(
            short_key("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").len(),
            8 + 3 + 5
        );
        assert_eq!(duration_ms(59_000), "59 s");
        assert_eq!(duration_ms(3_700_000), "1 h 1 min");
    }
}
