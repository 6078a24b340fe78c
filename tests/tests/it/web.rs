//! gRPC-Web over HTTP/1.1 on the gRPC port, as a browser or `buf curl --protocol grpcweb`
//! sends it: a unary call and a feed, through the same gate (a missing key is refused and
//! audited), and CORS only for the origins the operator listed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ocx_client::pb;
use ocx_testkit::{TestServer, call, carrier, consent, ingest, provision, tenant};
use prost::Message;

/// A frame of a gRPC-Web answer body.
#[derive(Debug)]
enum WebFrame {
    /// A message.
    Message(Bytes),
    /// The trailers: `grpc-status` and `grpc-message`.
    Trailers(Option<String>, Option<String>),
}

/// Reads the frames of a gRPC-Web answer body as they arrive.
struct WebReader {
    body: hyper::body::Incoming,
    buffer: BytesMut,
}

impl WebReader {
    fn new(response: http::Response<hyper::body::Incoming>) -> WebReader {
        WebReader {
            body: response.into_body(),
            buffer: BytesMut::new(),
        }
    }

    /// The next frame; `None` if the body ended without one.
    async fn next(&mut self) -> Option<WebFrame> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().expect("4 bytes"));
                let len = len as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    self.buffer.advance(5);
                    let payload = self.buffer.split_to(len).freeze();
                    if flags & 0x80 == 0 {
                        return Some(WebFrame::Message(payload));
                    }
                    let (mut status, mut message) = (None, None);
                    for line in String::from_utf8_lossy(&payload).split("\r\n") {
                        if let Some((name, value)) = line.split_once(':') {
                            match name.trim().to_ascii_lowercase().as_str() {
                                "grpc-status" => status = Some(value.trim().to_owned()),
                                "grpc-message" => message = Some(value.trim().to_owned()),
                                _ => {}
                            }
                        }
                    }
                    return Some(WebFrame::Trailers(status, message));
                }
            }
            let frame = self.body.frame().await?.expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

/// One HTTP/1.1 connection to the server, as a gRPC-Web client opens it.
async fn http1(server: &TestServer) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// A gRPC-Web request of `path` carrying `message`, with `key` if any.
fn web_request(
    path: &str,
    key: Option<&str>,
    message: &impl Message,
) -> http::Request<Full<Bytes>> {
    let body = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + body.len());
    framed.put_u8(0);
    framed.put_u32(body.len() as u32);
    framed.put_slice(&body);
    let mut request = http::Request::post(path)
        .header("host", "ocx")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Full::new(framed.freeze())).expect("request")
}

#[tokio::test]
async fn grpc_web_over_http1_serves_a_unary_call_and_a_feed_through_the_gate() {
    let server = TestServer::start_with(ocx_server::Config {
        cors_origins: vec!["https://noc.carrier.example".to_owned()],
        ..Default::default()
    })
    .await;
    let platform = server.platform().await;
    let a = carrier(&platform, "web-tel").await;
    let t = tenant(1);
    consent(&platform, "web-tel", &t).await;
    let number = "+442079460001".to_owned();
    provision(&a.client, &t, std::slice::from_ref(&number)).await;
    let records: Vec<pb::CallRecord> = (0..3)
        .map(|i| {
            call(
                &format!("web-{i}"),
                pb::CallDirection::Outbound,
                &number,
                "+33142685300",
                &t,
                1_790_000_000 + i,
            )
        })
        .collect();
    ingest(&platform, records).await;

    // A unary call.
    let mut sender = http1(&server).await;
    let request = web_request(
        "/ocx.v1.NumberService/GetNumber",
        Some(&a.secret),
        &pb::GetNumberRequest {
            number: number.clone(),
            ..Default::default()
        },
    );
    let response = sender.send_request(request).await.expect("unary");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/grpc-web"),
        "{:?}",
        response.headers()
    );
    let mut reader = WebReader::new(response);
    let Some(WebFrame::Message(message)) = reader.next().await else {
        panic!("no answer");
    };
    let got = pb::GetNumberResponse::decode(message).expect("decode");
    assert_eq!(got.phone_number.expect("number").number, number);
    let trailers = reader.next().await;
    assert!(
        matches!(&trailers, Some(WebFrame::Trailers(Some(status), _)) if status == "0"),
        "{trailers:?}"
    );

    // The feed, on a connection of its own: the three records, in order, the stream open.
    let mut sender = http1(&server).await;
    let request = web_request(
        "/ocx.v1.CallRecordService/StreamCallRecords",
        Some(&a.secret),
        &pb::StreamCallRecordsRequest::default(),
    );
    let response = sender.send_request(request).await.expect("feed");
    let mut reader = WebReader::new(response);
    let mut ids = Vec::new();
    while ids.len() < 3 {
        match reader.next().await {
            Some(WebFrame::Message(message)) => ids.extend(
                pb::StreamCallRecordsResponse::decode(message)
                    .expect("decode")
                    .call_records
                    .into_iter()
                    .map(|r| r.call_id),
            ),
            other => panic!("the feed ended early: {other:?}"),
        }
    }
    assert_eq!(ids, ["web-0", "web-1", "web-2"]);
    drop(reader);

    // Without a key: the gate refuses it, over gRPC-Web as over gRPC, and audits it.
    let mut sender = http1(&server).await;
    let request = web_request(
        "/ocx.v1.NumberService/ListNumbers",
        None,
        &pb::ListNumbersRequest::default(),
    );
    let response = sender.send_request(request).await.expect("unary");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let (status, message) = match header("grpc-status") {
        // A refusal comes back trailers-only: its status in the headers.
        Some(status) => (Some(status), header("grpc-message")),
        None => match WebReader::new(response).next().await {
            Some(WebFrame::Trailers(status, message)) => (status, message),
            other => panic!("{other:?}"),
        },
    };
    assert_eq!(status.as_deref(), Some("16"), "UNAUTHENTICATED");
    // grpc-message is percent-encoded on the wire.
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.replace("%20", " ").contains("missing API key")),
        "the gate's own words: {message:?}"
    );
    let audited: Vec<pb::AuditEvent> = platform
        .audit_events(pb::ListAuditEventsRequest {
            rpc: "ocx.v1.NumberService/ListNumbers".into(),
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("audit");
    assert_eq!(
        audited
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
        ["UNAUTHENTICATED"]
    );
    let streams: Vec<pb::AuditEvent> = platform
        .audit_events(pb::ListAuditEventsRequest {
            rpc: "ocx.v1.NumberService/GetNumber".into(),
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("audit");
    assert_eq!(streams.len(), 1, "the gRPC-Web GetNumber is audited");
    assert_eq!(streams[0].key_id, a.key_id);
}

#[tokio::test]
async fn cors_answers_only_the_listed_browser_origins() {
    let listed = "https://noc.carrier.example";
    let server = TestServer::start_with(ocx_server::Config {
        cors_origins: vec![listed.to_owned()],
        ..Default::default()
    })
    .await;
    let preflight = |origin: &str| {
        http::Request::builder()
            .method(http::Method::OPTIONS)
            .uri("/ocx.v1.NumberService/GetNumber")
            .header("host", "ocx")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let mut sender = http1(&server).await;
    let allowed = sender
        .send_request(preflight(listed))
        .await
        .expect("preflight");
    let header = |r: &http::Response<hyper::body::Incoming>, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_ascii_lowercase())
    };
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some(listed)
    );
    let headers = header(&allowed, "access-control-allow-headers").expect("allowed headers");
    assert!(
        headers.contains("authorization") && headers.contains("x-grpc-web"),
        "{headers}"
    );
    // A browser's trace context may go with its calls.
    assert!(headers.contains("traceparent"), "{headers}");
    drop(allowed);
    let mut sender = http1(&server).await;
    let other = sender
        .send_request(preflight("https://elsewhere.example"))
        .await
        .expect("preflight");
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    // The status trailers of an answer are readable by the listed origin's pages.
    let platform_key = server.platform_key.clone();
    let mut sender = http1(&server).await;
    let mut request = web_request(
        "/ocx.v1.AdminService/ListCarriers",
        Some(&platform_key),
        &pb::ListCarriersRequest::default(),
    );
    request
        .headers_mut()
        .insert("origin", http::HeaderValue::from_static(listed));
    let answer = sender.send_request(request).await.expect("call");
    assert_eq!(
        header(&answer, "access-control-allow-origin").as_deref(),
        Some(listed)
    );
    let exposed = header(&answer, "access-control-expose-headers").expect("exposed");
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
}
