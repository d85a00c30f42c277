//! Slow clients cannot hold the server: a connection that does not send a complete request
//! head within the header read timeout is closed (half a request, or nothing at all), a body
//! slower than the body read timeout gets 408 `request_timeout`, and SIGTERM ends the process
//! within the shutdown grace while a slow client is still connected. The storage plays no
//! part here: SQLite only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tacit_rm::sync::protocol;

/// Seconds until the server closes a connection that sent `prefix` and then nothing.
fn seconds_until_closed(server: &Server, prefix: &[u8]) -> f64 {
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(prefix).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // EOF or a reset: either way, closed. A read timeout (30 s) means it was held.
    match stream.read_to_end(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => panic!("held open"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => panic!("held open"),
        _ => {}
    }
    start.elapsed().as_secs_f64()
}

#[test]
fn slow_request_heads_are_disconnected() {
    let db = database(Backend::Sqlite, "timeouts_head").unwrap();
    let server = Server::start(&db.url, &["--header-read-timeout", "1"]);
    for prefix in [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..], b"G", b""] {
        let seconds = seconds_until_closed(&server, prefix);
        assert!(seconds < 5.0, "closed after {seconds} s");
    }
    // A complete request is served as before.
    let answer = raw_exchange(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_slow_body_gets_408() {
    let db = database(Backend::Sqlite, "timeouts_body").unwrap();
    let alice = token(&db.url, "alice", false);
    let server = Server::start(&db.url, &["--body-read-timeout", "1"]);
    let mut stream = TcpStream::connect(server.address()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n{}: k\r\nContent-Length: 1000\r\n\r\n",
        protocol::updates_path("m"),
        bearer(&alice),
        protocol::IDEMPOTENCY_KEY
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[0u8; 10]).unwrap();
    let start = Instant::now();
    let mut answer = vec![0u8; 4096];
    let got = stream.read(&mut answer).expect("an answer, not a hang");
    let answer = String::from_utf8_lossy(&answer[..got]).into_owned();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
}

#[test]
fn sigterm_ends_the_server_with_a_slow_client_connected() {
    let db = database(Backend::Sqlite, "timeouts_shutdown").unwrap();
    // A header timeout far beyond the grace: the grace is what ends the slow connection.
    let mut server = Server::start(
        &db.url,
        &["--header-read-timeout", "600", "--shutdown-grace", "1"],
    );
    let mut slow = TcpStream::connect(server.address()).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let status = server
        .terminate_within(Duration::from_secs(15))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
