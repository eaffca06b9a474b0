//! Graceful shutdown: SIGTERM lets a request in flight finish, then the
//! server exits cleanly and what it acknowledged is there after a restart.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn(data: &std::path::Path) -> (Child, String) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if reqwest::get(format!("{base}/v2/"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("wharf did not start");
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v2/slow/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Wharf sends absolute Locations: http://127.0.0.1:PORT/v2/...
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{base}/v2/")), "{location}");

    // A PATCH whose body arrives slowly: half now, half after the SIGTERM.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let patch = tokio::spawn({
        let client = client.clone();
        let location = location.clone();
        async move { client.patch(&location).body(body).send().await }
    });
    tx.send(Ok(bytes::Bytes::from(vec![1u8; 4096])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(bytes::Bytes::from(vec![2u8; 4096])))
        .await
        .unwrap();
    drop(tx);
    let resp = patch
        .await
        .unwrap()
        .expect("the request in flight was cut off");
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], "0-8191");

    // The server then exits by itself, successfully.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "wharf did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "wharf exited with {exit}");

    // What it acknowledged is there after a restart.
    let (mut child, base2) = spawn(dir.path()).await;
    let location2 = location.replacen(&base, &base2, 1);
    let r = client.get(&location2).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-8191");
    let _ = child.kill();
    let _ = child.wait();
}

/// A stream over an mpsc receiver (avoids a dependency for ten lines).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
