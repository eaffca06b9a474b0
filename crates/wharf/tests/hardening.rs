//! Limits and timeouts that keep slow, stalled or greedy clients from
//! holding the server's resources: header timeout (slowloris), stalled
//! upload bodies, idle connections, header size (431), URL length (414),
//! upload sessions per client (429), which only a session's end frees.

mod common;

use common::*;
use reqwest::Method;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Wait (at most `limit`) for the server to close `s`; true if it did.
async fn closed_by_server(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // a response (e.g. an error); keep reading until EOF
            Err(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let reg = local_only!(Registry::start_with(&["--header-timeout", "2"]).await);
    let mut slow = TcpStream::connect(reg.host_port()).await.unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let header = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    // One byte a second, far longer than the header timeout; others are
    // served meanwhile.
    for (i, b) in header.iter().enumerate() {
        if slow.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        let r = reg.get("/v2/").await;
        assert_eq!(r.status(), 200, "a normal client was not served");
        if i % 3 == 2 && closed_by_server(&mut slow, Duration::from_millis(1)).await {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(10), slow.read(&mut probe)).await
        {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "a client trickling its header was never disconnected"
    );
    assert_eq!(reg.get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn stalled_upload_body_is_aborted_and_the_session_freed() {
    let reg = local_only!(Registry::start_with(&["--body-timeout", "1"]).await);
    let name = repo("stall");
    let loc = reg.start_upload(&name).await;
    let path = location_path(&loc);

    // A PATCH that promises 100000 bytes, sends 10, then nothing.
    let mut s = TcpStream::connect(reg.host_port()).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"0123456789").await.unwrap();
    // The server gives up on the body: it answers and/or closes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the stalled body was never aborted"
        );
    }
    let text = String::from_utf8_lossy(&got);
    eprintln!("answer to the stalled body: {text}");
    // Either no answer (the connection is closed) or a client error.
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "a stalled body was not refused as the client's fault: {text}"
    );

    // The session is usable again (its lock was released) and holds none
    // of the partial chunk.
    let r = reg.get(&path).await;
    assert_eq!(r.status(), 204);
    // Nothing of the partial chunk was kept (10 bytes would be "0-9").
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    let data = b"the whole chunk".to_vec();
    complete_empty_session(&reg, &path, &data).await;
    reg.assert_blob(&name, &data).await;
}

/// Send `data` as the one chunk of the empty session at `path`, then close
/// it with its digest.
async fn complete_empty_session(reg: &Registry, path: &str, data: &[u8]) {
    let r = reg
        .req(Method::PATCH, path)
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        header(&r, "range").as_deref(),
        Some(format!("0-{}", data.len() - 1).as_str())
    );
    let loc = reg.resolve(&location(&r));
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = reg
        .client
        .put(format!("{loc}{sep}digest={}", digest(data)))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let reg = local_only!(Registry::start_with(&["--idle-timeout", "1"]).await);
    let mut s = TcpStream::connect(reg.host_port()).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive, but nothing more is sent: the server hangs up.
    assert!(
        closed_by_server(&mut s, Duration::from_secs(30)).await,
        "an idle keep-alive connection was kept open"
    );
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let reg = local_only!(Registry::start_with(&["--max-header-bytes", "4096"]).await);
    let big = "b".repeat(8192);
    let r = reg.raw("GET", "/v2/", &[("X-Big", &big)], b"").await;
    assert_eq!(r.status, 431);
    // Many small headers adding up count too.
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("X-H{i}"), "v".repeat(60)))
        .collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = reg.raw("GET", "/v2/", &refs, b"").await;
    assert_eq!(r.status, 431);
    // A normal request is fine.
    let r = reg.raw("GET", "/v2/", &[("X-Small", "ok")], b"").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn overlong_url_gets_414_with_oci_json() {
    let reg = local_only!(Registry::start_with(&["--max-url-length", "1000"]).await);
    let long = "a/".repeat(600);
    for method in [Method::GET, Method::PUT, Method::POST] {
        let r = reg
            .req(method.clone(), &format!("/v2/{long}x/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 414, "{method}");
        assert_error(r, 414, "UNSUPPORTED").await;
    }
    // A long query counts too.
    let r = reg
        .get(&format!("/v2/_catalog?last={}", "z".repeat(1200)))
        .await;
    assert_error(r, 414, "UNSUPPORTED").await;
    let r = reg.head(&format!("/v2/{long}x/manifests/latest")).await;
    assert_eq!(r.status(), 414);
    // Just under the limit is routed as usual.
    let r = reg.get(&format!("/v2/{}/tags/list", "a".repeat(200))).await;
    assert_eq!(r.status(), 404);
    // Refusals are in the access log like every answer.
    assert!(reg.logs().contains("status=414"), "{}", reg.logs());
}

#[tokio::test]
async fn upload_sessions_per_client_are_limited_and_released() {
    let reg = local_only!(Registry::start_with(&["--max-uploads-per-client", "2"]).await);
    let name = repo("slots");
    let post = || async {
        reg.req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap()
    };
    let a = post().await;
    assert_eq!(a.status(), 202);
    let a = reg.resolve(&location(&a));
    let b = post().await;
    assert_eq!(b.status(), 202);
    let b = reg.resolve(&location(&b));
    assert_error(post().await, 429, "TOOMANYREQUESTS").await;

    // A monolithic push opens no session: still allowed.
    let whole = unique_bytes("monolithic");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/{name}/blobs/uploads/?digest={}", digest(&whole)),
        )
        .header("Content-Type", "application/octet-stream")
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Finishing one frees its slot.
    let data = unique_bytes("slot");
    let sep = if a.contains('?') { '&' } else { '?' };
    let r = reg
        .client
        .put(format!("{a}{sep}digest={}", digest(&data)))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c = post().await;
    assert_eq!(c.status(), 202);
    let c = reg.resolve(&location(&c));
    assert_error(post().await, 429, "TOOMANYREQUESTS").await;

    // Cancelling one frees its slot.
    let r = reg.client.delete(&b).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(post().await.status(), 202);
    assert_error(post().await, 429, "TOOMANYREQUESTS").await;

    // Cancelling frees the slot once; asking again (404) frees nothing more.
    let r = reg.client.delete(&c).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = reg.client.delete(&c).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(post().await.status(), 202);
    assert_error(post().await, 429, "TOOMANYREQUESTS").await;
}

#[tokio::test]
async fn upload_sessions_in_all_are_limited() {
    let reg = local_only!(
        Registry::start_with(&["--max-uploads", "2", "--max-uploads-per-client", "0"]).await
    );
    let name = repo("slots-total");
    let a = post_upload(&reg, &name).await;
    assert_eq!(a.status(), 202);
    assert_eq!(post_upload(&reg, &name).await.status(), 202);
    let r = post_upload(&reg, &name).await;
    assert_error(r, 429, "TOOMANYREQUESTS").await;
    let r = reg
        .client
        .delete(reg.resolve(&location(&a)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(post_upload(&reg, &name).await.status(), 202);
    assert_error(post_upload(&reg, &name).await, 429, "TOOMANYREQUESTS").await;
}

/// POST an empty upload session start to `name`.
async fn post_upload(reg: &Registry, name: &str) -> reqwest::Response {
    reg.req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap()
}

/// Requests naming live sessions under another repository get 404 and
/// neither end the sessions nor free their slots (issue 12, point 2).
#[tokio::test]
async fn a_wrong_repository_frees_no_upload_slot() {
    let reg = local_only!(Registry::start_with(&["--max-uploads-per-client", "3"]).await);
    let name = repo("slots-mine");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let r = post_upload(&reg, &name).await;
        assert_eq!(r.status(), 202);
        sessions.push(reg.resolve(&location(&r)));
    }
    assert_error(post_upload(&reg, &name).await, 429, "TOOMANYREQUESTS").await;

    // Each session's id under another repository: 404, whatever the method.
    let other = repo("slots-other");
    for loc in &sessions {
        let id = loc
            .split('?')
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap();
        let path = format!("/v2/{other}/blobs/uploads/{id}");
        let r = reg
            .req(Method::PATCH, &path)
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = reg
            .req(Method::PUT, &format!("{path}?digest={}", digest(b"")))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = reg.req(Method::DELETE, &path).send().await.unwrap();
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        assert_error(reg.get(&path).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // The three sessions still hold their slots...
    assert_error(post_upload(&reg, &name).await, 429, "TOOMANYREQUESTS").await;
    // ...and still work.
    for (i, loc) in sessions.iter().enumerate() {
        let data = unique_bytes(&format!("still-alive-{i}"));
        complete_empty_session(&reg, &location_path(loc), &data).await;
        reg.assert_blob(&name, &data).await;
    }
    // Now they are done, their slots are free.
    for _ in 0..3 {
        assert_eq!(post_upload(&reg, &name).await.status(), 202);
    }
    assert_error(post_upload(&reg, &name).await, 429, "TOOMANYREQUESTS").await;
}

/// A closing PUT whose digest does not match ends its session and frees its
/// slot (issue 12, point 3).
#[tokio::test]
async fn a_failed_closing_put_frees_its_upload_slot() {
    let reg = local_only!(Registry::start_with(&["--max-uploads-per-client", "3"]).await);
    let name = repo("slots-mismatch");
    for i in 0..7 {
        let r = post_upload(&reg, &name).await;
        assert_eq!(r.status(), 202, "session {i} refused after failed PUTs");
        let loc = reg.resolve(&location(&r));
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = reg
            .client
            .put(format!("{loc}{sep}digest={}", digest(b"something else")))
            .header("Content-Type", "application/octet-stream")
            .body(format!("chunk {i}"))
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "DIGEST_INVALID").await;
        // The session is over.
        let r = reg.client.get(&loc).send().await.unwrap();
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // None of them holds a slot: three new sessions fit.
    for _ in 0..3 {
        assert_eq!(post_upload(&reg, &name).await.status(), 202);
    }
    assert_error(post_upload(&reg, &name).await, 429, "TOOMANYREQUESTS").await;
}

/// The default limits let 40 `docker push`es of 5 layers each from one
/// address (a CI farm behind one NAT) open all their sessions at once.
#[tokio::test]
async fn default_limits_fit_a_ci_farm_behind_one_address() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("ci-farm");
    let pushes = (0..40).map(|i| {
        let (reg, name) = (&reg, &name);
        async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let r = post_upload(reg, &format!("{name}/runner-{i}")).await;
                statuses.push(r.status().as_u16());
            }
            statuses
        }
    });
    let statuses = futures_util::future::join_all(pushes).await;
    assert!(statuses.iter().flatten().all(|s| *s == 202), "{statuses:?}");
}

#[tokio::test]
async fn upload_slots_expire_with_their_sessions() {
    let reg = local_only!(
        Registry::start_with(&["--max-uploads-per-client", "1", "--upload-expiry", "1"]).await
    );
    let name = repo("slot-expiry");
    let post = || async {
        reg.req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap()
    };
    assert_eq!(post().await.status(), 202);
    // Abandoned: once the session expires, the client may open another.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = post().await;
        if r.status() == 202 {
            break;
        }
        assert_error(r, 429, "TOOMANYREQUESTS").await;
        assert!(
            Instant::now() < deadline,
            "the abandoned session's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client that drops the connection in the middle of a big PATCH leaves
/// the session exactly as it was: the bytes already queued for writing are
/// not written after the partial chunk has been undone.
#[tokio::test]
async fn aborted_big_patch_leaves_no_bytes_behind() {
    let reg = Registry::start().await;
    if reg.is_external() {
        return;
    }
    let name = repo("abort-patch");
    for round in 0..3 {
        let loc = reg.start_upload(&name).await;
        let path = location_path(&loc);
        let mut s = TcpStream::connect(reg.host_port()).await.unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = pseudo_random(1 << 20, round);
        for _ in 0..16 {
            s.write_all(&chunk).await.unwrap();
        }
        drop(s);

        // Once the server has dealt with the broken request, the session
        // holds nothing, and stays that way.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut empty_since = None;
        loop {
            let r = reg.get(&path).await;
            assert_eq!(r.status(), 204, "round {round}");
            if header(&r, "range").as_deref() == Some("0-0") {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            } else {
                empty_since = None;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the session kept bytes of an aborted chunk: {:?}",
                header(&r, "range")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let data = pseudo_random(3 << 20, 100 + round);
        complete_empty_session(&reg, &path, &data).await;
        reg.assert_blob(&name, &data).await;
    }
}

/// Read one HTTP/1.1 response (status line, headers, `Content-Length`
/// body) from `s`; `None` if the connection ends or fails first.
async fn read_response(s: &mut TcpStream) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                return Some((status, headers, body));
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return None,
        }
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn codes(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A `Content-Range` whose length `end - start + 1` does not fit in a u64
/// is refused (it used to wrap to 0 and match an empty body: 202), on a
/// PATCH and on a closing PUT, and the session is left as it was.
#[tokio::test]
async fn content_range_overflow_is_refused() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("cr-overflow");
    let path = location_path(&reg.start_upload(&name).await);
    let max = u64::MAX;
    let empty = sha256(b"");
    for (method, target, range) in [
        ("PATCH", path.clone(), format!("0-{max}")),
        ("PATCH", path.clone(), "0-18446744073709551616".to_owned()),
        ("PUT", format!("{path}?digest={empty}"), format!("0-{max}")),
    ] {
        let r = reg
            .raw(method, &target, &[("Content-Range", range.as_str())], b"")
            .await;
        assert_eq!(
            (r.status, codes(&r.body)),
            (400, vec!["BLOB_UPLOAD_INVALID".to_owned()]),
            "{method} Content-Range: {range}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A range at the very top of u64 with a length that fits: out of order.
    let r = reg
        .raw(
            "PATCH",
            &path,
            &[("Content-Range", &format!("{}-{max}", max - 1))],
            b"ab",
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("range"), Some("0-0"));
    // Nothing was taken, and the session still works.
    let r = reg.get(&path).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    complete_empty_session(&reg, &path, b"after the overflow").await;
    reg.assert_blob(&name, b"after the overflow").await;
}

/// A blob `Range` at the u64 edges: clamped or 416, never an overflow.
#[tokio::test]
async fn blob_range_at_u64_edges() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("range-edges");
    let data = b"0123456789";
    let d = reg.push_blob(&name, data).await;
    let max = u64::MAX;
    let target = format!("/v2/{name}/blobs/{d}");
    for (range, status, content_range) in [
        (format!("bytes=0-{max}"), 206, Some("bytes 0-9/10")),
        (format!("bytes=-{max}"), 206, Some("bytes 0-9/10")),
        (format!("bytes={max}-"), 416, Some("bytes */10")),
        (format!("bytes={max}-{max}"), 416, Some("bytes */10")),
        ("bytes=0-18446744073709551616".to_owned(), 200, None),
    ] {
        let r = reg.raw("GET", &target, &[("Range", &range)], b"").await;
        assert_eq!(r.status, status, "{range}");
        assert_eq!(r.header("content-range"), content_range, "{range}");
    }
}

/// The scenario of a closing PUT at the wrong offset with a big body: POST,
/// PATCH 1 byte, PUT 4 MiB with `Content-Range: 0-...`. The server answers
/// 416 before reading the body; the client, which writes the whole body
/// before reading, must still get that 416 and its `Range`, not a reset
/// connection.
#[tokio::test]
async fn early_error_on_a_big_body_reaches_the_client() {
    let reg = local_only!(Registry::start_with(&[]).await);
    let name = repo("early-416");
    let path = location_path(&reg.start_upload(&name).await);
    let r = reg
        .raw("PATCH", &path, &[("Content-Range", "0-0")], b"x")
        .await;
    assert_eq!(r.status, 202);
    let body = pseudo_random(4 << 20, 12);
    let digest = sha256(&body);
    let mut s = TcpStream::connect(reg.host_port()).await.unwrap();
    let head = format!(
        "PUT {path}?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: 0-{}\r\n\r\n",
        body.len(),
        body.len() - 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(60), s.write_all(&body)).await;
    assert!(
        matches!(sent, Ok(Ok(()))),
        "the server broke the connection while the body was sent: {sent:?}"
    );
    let (status, headers, body) = read_response(&mut s)
        .await
        .expect("a response after the body");
    assert_eq!(status, 416, "{:?}", String::from_utf8_lossy(&body));
    assert_eq!(find(&headers, "range"), Some("0-0"));
    assert_eq!(codes(&body), ["BLOB_UPLOAD_INVALID"]);
    // The connection is still good for another request.
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, headers, _) = read_response(&mut s).await.expect("a second response");
    assert_eq!(status, 204);
    assert_eq!(find(&headers, "range"), Some("0-0"));
}

/// The same with `Expect: 100-continue`: the 416 comes before the body is
/// sent, with no `100 Continue` first, so the client never sends the body;
/// the server does not wait for it either (it closes the connection after
/// the answer instead of waiting out the body timeout).
#[tokio::test]
async fn early_error_with_expect_continue_comes_before_the_body() {
    let reg = local_only!(Registry::start_with(&["--body-timeout", "3600"]).await);
    let name = repo("early-expect");
    let path = location_path(&reg.start_upload(&name).await);
    let r = reg
        .raw("PATCH", &path, &[("Content-Range", "0-0")], b"x")
        .await;
    assert_eq!(r.status, 202);
    let len = 4u64 << 20;
    let digest = sha256(b"never sent");
    let mut s = TcpStream::connect(reg.host_port()).await.unwrap();
    let head = format!(
        "PUT {path}?digest={digest} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len}\r\nContent-Range: 0-{}\r\n\r\n",
        len - 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, body) = read_response(&mut s)
        .await
        .expect("an answer without the body being sent");
    assert_eq!(status, 416, "{:?}", String::from_utf8_lossy(&body));
    assert_eq!(find(&headers, "range"), Some("0-0"));
    assert_eq!(codes(&body), ["BLOB_UPLOAD_INVALID"]);
    assert!(
        closed_by_server(&mut s, Duration::from_secs(30)).await,
        "the server waits for a body it told the client not to send"
    );
    // Nothing of the PUT was taken.
    let r = reg.get(&path).await;
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
}
