//! EncryptStream and DecryptStream: batches in, batches out, in order, and a
//! refused message ends the stream with its status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::requests::batch;
use common::{Server, ctx};
use envelope::pb;
use tonic::Code;

#[tokio::test]
async fn streams_answer_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let requests: Vec<_> = (0..5).map(|m| batch("", m * 100, 100)).collect();
    let mut responses = c
        .encrypt_stream(tokio_stream::iter(
            requests.into_iter().map(pb::EncryptStreamRequest::from),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    let mut answers = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        answers.push(r.results.len());
        for res in r.results {
            match res.result {
                Some(pb::encrypt_result::Result::Ciphertext(ct)) => records.push(ct),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(records.len(), 500);
    // One response per message (API.md, "Streams").
    assert_eq!(answers, [100; 5]);
    // Back through DecryptStream in two messages; order is kept across messages.
    let items: Vec<pb::DecryptItem> = records
        .iter()
        .enumerate()
        .map(|(i, ct)| pb::DecryptItem {
            ciphertext: ct.clone(),
            context: ctx(&[("row", &i.to_string())]),
        })
        .collect();
    let (first, second) = items.split_at(250);
    let requests = vec![
        pb::DecryptBatchRequest {
            key: String::new(),
            items: first.to_vec(),
        },
        pb::DecryptBatchRequest {
            key: String::new(),
            items: second.to_vec(),
        },
    ];
    let mut responses = c
        .decrypt_stream(tokio_stream::iter(
            requests.into_iter().map(pb::DecryptStreamRequest::from),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut i = 0;
    let mut answers = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        answers.push(r.results.len());
        for res in r.results {
            match res.result {
                Some(pb::decrypt_result::Result::Plaintext(p)) => {
                    assert_eq!(p, format!("record-{i}").as_bytes())
                }
                other => panic!("{i}: {other:?}"),
            }
            i += 1;
        }
    }
    assert_eq!(i, 500);
    assert_eq!(answers, [250; 2]);
    // One audit line per message, with its items (API.md, "Streams"); the
    // second is written up to 10 ms after its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<serde_json::Value> = server
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["rpc"] == "DecryptStream")
            .collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "{}", server.stdout());
    for l in &lines {
        assert_eq!(
            (&l["items"], &l["failed_items"]),
            (&250.into(), &0.into()),
            "{l}"
        );
    }
}

/// A client built from the API before the stream messages had names of
/// their own sends EncryptBatchRequest on EncryptStream and reads
/// EncryptBatchResponse: the bytes are the same, so it is served as before.
#[tokio::test]
async fn a_client_sending_batch_messages_on_a_stream_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<pb::EncryptBatchRequest, pb::EncryptBatchResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/envelope.v1.Envelope/EncryptStream");
    let requests = tokio_stream::iter(vec![batch("", 0, 2), batch("", 2, 3)]);
    let mut responses = grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        assert!(
            r.results
                .iter()
                .all(|x| matches!(x.result, Some(pb::encrypt_result::Result::Ciphertext(_))))
        );
        sizes.push(r.results.len());
    }
    assert_eq!(sizes, vec![2, 3]);
}

#[tokio::test]
async fn a_refused_message_ends_the_stream_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("metrics_listen = \"127.0.0.1:0\"\n[limits]\nmax_batch_items = 5\n"),
    );
    // An unknown key, then more than max_batch_items items.
    for (refused, code) in [
        (batch("nope", 3, 3), Code::NotFound),
        (batch("", 3, 6), Code::InvalidArgument),
    ] {
        let mut c = server.client().await;
        let requests = vec![batch("", 0, 3), refused, batch("", 6, 3)];
        let mut responses = c
            .encrypt_stream(tokio_stream::iter(
                requests.into_iter().map(pb::EncryptStreamRequest::from),
            ))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(first.results.len(), 3);
        let end = responses.message().await.unwrap_err();
        assert_eq!(end.code(), code, "{end:?}");
    }
    // A DecryptStream the same way: a message of 2, then one of 6.
    let mut c = server.client().await;
    let item = |ct: &[u8]| pb::DecryptItem {
        ciphertext: bytes::Bytes::copy_from_slice(ct),
        context: Default::default(),
    };
    let message = |n: usize| pb::DecryptStreamRequest {
        key: String::new(),
        items: (0..n).map(|_| item(b"not a record")).collect(),
    };
    let mut responses = c
        .decrypt_stream(tokio_stream::iter(vec![message(2), message(6)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(responses.message().await.unwrap().unwrap().results.len(), 2);
    let end = responses.message().await.unwrap_err();
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
    // Every message is audited like a unary batch.
    let audit = server
        .audit_with(&["\"rpc\":\"EncryptStream\"", "\"items\":3"])
        .await;
    assert!(
        audit.contains("\"rpc\":\"EncryptStream\"") && audit.contains("\"items\":3"),
        "{audit}"
    );
    // And metered like one (API.md, "Streams"): a count per message by
    // code, its handler time, and its items unless refused as a whole.
    let m = common::http_get(server.metrics.as_ref().unwrap(), "/metrics").1;
    for series in [
        "envelope_requests_total{rpc=\"EncryptStream\",key=\"default\",code=\"OK\"} 2\n",
        "envelope_requests_total{rpc=\"EncryptStream\",key=\"unknown\",code=\"NOT_FOUND\"} 1\n",
        "envelope_requests_total{rpc=\"EncryptStream\",key=\"default\",code=\"INVALID_ARGUMENT\"} 1\n",
        "envelope_request_duration_seconds_count{rpc=\"EncryptStream\"} 4\n",
        "envelope_requests_total{rpc=\"DecryptStream\",key=\"default\",code=\"OK\"} 1\n",
        "envelope_requests_total{rpc=\"DecryptStream\",key=\"default\",code=\"INVALID_ARGUMENT\"} 1\n",
        "envelope_request_duration_seconds_count{rpc=\"DecryptStream\"} 2\n",
        "envelope_batch_items_count 3\n",
        "envelope_batch_items_sum 8.0\n",
    ] {
        assert!(m.contains(series), "{series} in {m}");
    }
}

/// A stream held open: one message sent and answered, the sender kept.
struct Held {
    _tx: tokio::sync::mpsc::Sender<pb::EncryptStreamRequest>,
    _responses: tonic::Streaming<pb::EncryptStreamResponse>,
    _client: envelope::pb::envelope_client::EnvelopeClient<tonic::transport::Channel>,
}

/// Opens an EncryptStream on a new connection; the refusal, if any.
async fn open_stream(server: &Server) -> Result<Held, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(batch("", 0, 1).into()).await.unwrap();
    let mut c = server.client().await;
    let mut responses = c
        .encrypt_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    responses.message().await?.expect("an answer");
    Ok(Held {
        _tx: tx,
        _responses: responses,
        _client: c,
    })
}

fn refused(server: &Server, reason: &str) -> u64 {
    let m = common::http_get(server.metrics.as_ref().unwrap(), "/metrics").1;
    let series = format!("envelope_refused_calls_total{{reason=\"{reason}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {m}"))
}

/// CONFIG.md and SECURITY.md: a stream over `max_streams`, or over
/// `max_streams_per_caller` (a caller without a certificate is its IP
/// address, whichever connection it uses), is refused at once with
/// RESOURCE_EXHAUSTED and counted by reason; streams have their own pool,
/// so unary calls still run while it is full; a closed stream frees its slot.
#[tokio::test]
async fn streams_over_their_pool_are_refused_and_unary_calls_still_run() {
    for (max, per_caller, reason) in [(2, 2, "max_streams"), (5, 2, "max_streams_per_caller")] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "metrics_listen = \"127.0.0.1:0\"\n[limits]\nmax_streams = {max}\nmax_streams_per_caller = {per_caller}\n"
        );
        let server = Server::start(&dir.path().join("data"), Some(&cfg));
        let mut held = vec![
            open_stream(&server).await.unwrap(),
            open_stream(&server).await.unwrap(),
        ];
        let started = std::time::Instant::now();
        let Err(status) = open_stream(&server).await else {
            panic!("{reason}: a third stream was served");
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{reason}");
        assert_eq!(
            status.message(),
            "too many streams are open (for this caller, or in all); retry later"
        );
        // "At once": well before any timeout the server has (5 s and up).
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(refused(&server, reason), 1, "{reason}");
        common::requests::round_trip(&server, "", "unary beside full streams").await;
        held.pop();
        // The slot comes back once the server sees the stream end.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open_stream(&server).await {
                Ok(h) => {
                    held.push(h);
                    break;
                }
                Err(s) => assert!(std::time::Instant::now() < deadline, "{reason}: {s:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Audit lines of EncryptStream messages answered so far.
fn answered(server: &Server) -> usize {
    server.stdout().matches("\"rpc\":\"EncryptStream\"").count()
}

/// API.md, "Streams": a client that stops reading its responses stops the
/// server reading its requests. What the server holds for it is bounded:
/// the client's window and one chunk of tonic's encoder, then 4 messages in
/// the stream's queue, then the one being answered. Once the client reads,
/// every message is answered.
#[tokio::test]
async fn a_client_that_stops_reading_stops_the_server_reading() {
    use prost::Message;
    const MESSAGES: usize = 400;
    const WINDOW: u32 = 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/envelope.v1.Envelope/EncryptStream",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    // 4 KiB plaintexts: each answer is a little over 4 KiB.
    let plaintext = vec![0x5a; 4096];
    let mut request_bytes = 0;
    for i in 0..MESSAGES {
        let mut m = pb::EncryptStreamRequest::from(batch("", i, 1));
        m.items[0].plaintext = bytes::Bytes::from(plaintext.clone());
        let encoded = m.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&encoded);
        request_bytes += frame.len();
        body.send_data(frame.into(), i + 1 == MESSAGES).unwrap();
    }
    // Wait until the count stops moving (the writer's 10 ms and the
    // server's pace both well inside 500 ms), then check it stays put.
    let mut held = answered(&server);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = answered(&server);
        if now == held {
            break;
        }
        held = now;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(answered(&server), held, "the server kept reading");
    // The transport holds what the client's window takes and one chunk of
    // tonic's encoder (it yields at 32 KiB, so up to 36 KiB of 4 KiB
    // answers); then come the stream's queue of 4 and the answer in hand.
    let answer_bytes = 4096 + 300;
    let transport = (36 * 1024 + WINDOW as usize).div_ceil(answer_bytes);
    let bound = transport + 4 + 1 + 3;
    assert!(
        held < MESSAGES && held <= bound,
        "{held} of {MESSAGES} answered ({request_bytes} request bytes sent) while the client read nothing; bound {bound} at about {answer_bytes} bytes an answer"
    );

    // Reading the answers lets the rest through; every one arrives.
    let mut responses = resp.await.unwrap().into_body();
    let mut got = 0usize;
    let mut buf = Vec::new();
    while let Some(chunk) = responses.data().await {
        let chunk = chunk.unwrap();
        let _ = responses.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let m = pb::EncryptStreamResponse::decode(&buf[5..5 + len]).unwrap();
            assert_eq!(m.results.len(), 1);
            buf.drain(..5 + len);
            got += 1;
        }
    }
    assert_eq!(got, MESSAGES);
    eprintln!("answered while not read: {held} of {MESSAGES}, bound {bound}");
}

/// CLIENTS.md, "Deadlines": `request_timeout_secs` caps each unary call,
/// not a stream. Under a 1 s cap, a stream sending a message every 500 ms
/// is still answered 3 s in.
#[tokio::test]
async fn a_stream_outlives_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        Some("[limits]\nrequest_timeout_secs = 1\n"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut c = server.client().await;
    tx.send(batch("", 0, 1).into()).await.unwrap();
    let mut responses = c
        .encrypt_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 1..=6 {
        responses.message().await.unwrap().expect("an answer");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tx.send(batch("", i, 1).into()).await.unwrap();
    }
    let last = responses
        .message()
        .await
        .unwrap()
        .expect("an answer 3 s in");
    assert_eq!(last.results.len(), 1);
}

/// API.md, "Streams": a failing item is an item result, and the stream
/// goes on to the next message.
#[tokio::test]
async fn a_failing_item_does_not_end_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let mut c = server.client().await;
    let sealed = c
        .encrypt(common::requests::enc("", b"kept", &[]))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let message = |ciphertext: bytes::Bytes| pb::DecryptStreamRequest {
        key: String::new(),
        items: vec![pb::DecryptItem {
            ciphertext,
            context: Default::default(),
        }],
    };
    let requests = vec![
        message(bytes::Bytes::from_static(b"not a record")),
        message(sealed),
    ];
    let mut responses = c
        .decrypt_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(
            &first.results[0].result,
            Some(pb::decrypt_result::Result::Error(e)) if e.code == Code::InvalidArgument as i32
        ),
        "{first:?}"
    );
    let second = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(
            &second.results[0].result,
            Some(pb::decrypt_result::Result::Plaintext(p)) if p.as_ref() == b"kept"
        ),
        "{second:?}"
    );
    assert!(responses.message().await.unwrap().is_none());
}
