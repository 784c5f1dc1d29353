//! The HTTP limits that keep a network peer from exhausting the validator or the worker: a cap on
//! open connections per port (further ones wait until one closes) and a cap on `/api/events`
//! subscribers (one more is answered 503 with `Retry-After`). Real sockets, the real router.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use koth_validator::http::{api_router, CappedListener, FeedHub, MAX_SSE_SUBSCRIBERS};
use koth_validator::ValidatorState;

/// Serve the feeds on a loopback port with at most `max_connections` connections; returns the
/// address and the runtime that serves it (dropping it stops the server).
fn serve(max_connections: usize) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    serve_with(max_connections, None)
}

fn serve_with(
    max_connections: usize,
    quiet: Option<Duration>,
) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("koth-http-limits-{}.log", std::process::id()));
    let hub = FeedHub::new(ValidatorState::new(), tmp);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api_router(hub);
    rt.spawn(async move {
        let mut listener = CappedListener::new(listener, max_connections);
        if let Some(limit) = quiet {
            listener = listener.with_quiet_limit(limit);
        }
        let _ = axum::serve(listener, router).await;
    });
    (addr, rt)
}

/// Send a GET and return the status line, or `None` if nothing came back within `wait`.
fn get_status(stream: &mut TcpStream, path: &str, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let (addr, _rt) = serve(2);
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    assert!(get_status(&mut a, "/healthz", Duration::from_secs(5))
        .unwrap()
        .contains("200"));
    assert!(get_status(&mut b, "/healthz", Duration::from_secs(5))
        .unwrap()
        .contains("200"));
    // Both slots are held by open (keep-alive) connections: a third is not served...
    let mut c = TcpStream::connect(addr).unwrap();
    assert_eq!(get_status(&mut c, "/healthz", Duration::from_secs(1)), None);
    // ...until one of them closes.
    drop(a);
    let mut line = None;
    for _ in 0..50 {
        let mut buf = [0u8; 256];
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = c.read(&mut buf) {
            if n > 0 {
                line = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
    }
    assert!(line.expect("never served").starts_with("HTTP/1.1 200"));
    drop(b);
}

#[test]
fn event_subscribers_beyond_the_cap_are_told_to_retry() {
    let (addr, _rt) = serve(MAX_SSE_SUBSCRIBERS + 8);
    let mut open = Vec::new();
    for i in 0..MAX_SSE_SUBSCRIBERS {
        let mut s = TcpStream::connect(addr).unwrap();
        let status = get_status(&mut s, "/api/events", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("subscriber {i} got no answer"));
        assert!(status.contains("200"), "subscriber {i}: {status}");
        open.push(s);
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    let status = get_status(&mut extra, "/api/events", Duration::from_secs(5)).unwrap();
    assert!(status.contains("503"), "{status}");
    // The other feeds still answer.
    let mut state = TcpStream::connect(addr).unwrap();
    let status = get_status(&mut state, "/api/state", Duration::from_secs(5)).unwrap();
    assert!(status.contains("200"), "{status}");
    // A subscriber leaves: a new one gets in.
    open.pop();
    let mut again = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let mut s = TcpStream::connect(addr).unwrap();
        let status = get_status(&mut s, "/api/events", Duration::from_secs(5)).unwrap();
        if status.contains("200") {
            again = Some(s);
            break;
        }
    }
    assert!(
        again.is_some(),
        "the freed subscriber slot was never reused"
    );
}

/// A worker that answers 200 and then streams bytes without ever ending a line: the validator's
/// client gives up after `MAX_WORKER_LINE_BYTES` instead of buffering without bound.
#[test]
fn a_worker_answer_without_newlines_is_cut_off_at_the_line_cap() {
    use koth_validator::worker::{remote_duel, DuelRequest, MAX_WORKER_LINE_BYTES};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // Read the request head (the body is small; the answer does not depend on it).
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let junk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        // Twice the cap at most, so a client without the cap fails differently (stream ended).
        while sent < 2 * MAX_WORKER_LINE_BYTES {
            if conn.write_all(&junk).is_err() {
                return sent;
            }
            sent += junk.len();
        }
        sent
    });
    let d = koth_core::Digest::of(b"x");
    let request = DuelRequest {
        competition_sha256: d,
        king: d,
        king_location: "file:///k".into(),
        challenger: d,
        challenger_location: "file:///c".into(),
        seed: koth_validator::SeedMaterial {
            competition_sha256: d,
            reveal_block_hash: "0x00".into(),
            hotkey: "h".into(),
        },
        king_pool: None,
    };
    let err = remote_duel(
        &format!("http://{addr}"),
        "token",
        &request,
        Duration::from_secs(60),
        &mut |_| true,
    )
    .unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("longer than"), "{text}");
    let sent = server.join().unwrap();
    assert!(
        sent < 2 * MAX_WORKER_LINE_BYTES,
        "the client read everything"
    );
}

/// A slowloris peer (a request head sent a byte at a time, never finished) and an idle
/// keep-alive connection lose their slot after the quiet limit; a normal request is served.
#[test]
fn a_connection_the_server_has_nothing_to_answer_on_is_closed_after_the_quiet_limit() {
    let (addr, _rt) = serve_with(1, Some(Duration::from_secs(1)));
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/st").unwrap();
    let started = std::time::Instant::now();
    // Keep trickling; the server closes the connection (EOF or reset) after about a second.
    let mut closed = false;
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while started.elapsed() < Duration::from_secs(10) {
        let _ = slow.write_all(b"a");
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Ok(_) | Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the slowloris connection was never closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The only slot is free again: a normal request is answered.
    let mut ok = TcpStream::connect(addr).unwrap();
    let status = get_status(&mut ok, "/healthz", Duration::from_secs(5)).unwrap();
    assert!(status.contains("200"), "{status}");
}
