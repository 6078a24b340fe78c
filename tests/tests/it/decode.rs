//! Requests the server cannot decode. Every RPC of the contract (read from the descriptor set,
//! so an RPC added later is covered without a change here) is sent bytes that are no valid
//! message of its request type: a varint longer than ten bytes, field number 0, a wire type
//! that does not exist, a length-delimited field cut short, and, where the request has a
//! string field, invalid UTF-8 in it and the field sent as a varint. Each gets
//! INVALID_ARGUMENT naming the request type (never INTERNAL, which means a fault of the
//! server), is audited with that outcome, and on a stream of requests comes after the
//! acknowledgement of the valid batch sent before it.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use ocx_client::pb;
use ocx_testkit::raw::RawClient;
use ocx_testkit::{TestServer, call, carrier, report, tenant};
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use tonic::Code;

/// One RPC of the contract, as its descriptor says.
struct Method {
    /// `/ocx.v1.Service/Method`.
    path: String,
    /// The request type's full name, `ocx.v1.GetNumberRequest`.
    input: String,
    /// The client sends a stream of requests.
    client_streaming: bool,
    /// The server answers with a stream.
    server_streaming: bool,
    /// The number of the request type's first string field, if it has one.
    string_field: Option<u32>,
}

/// Every method of package `ocx.v1`.
fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(ocx_api::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let files: Vec<_> = set
        .file
        .iter()
        .filter(|f| f.package() == "ocx.v1")
        .collect();
    let string_fields: BTreeMap<String, Option<u32>> = files
        .iter()
        .flat_map(|f| &f.message_type)
        .map(|m| {
            let first = m
                .field
                .iter()
                .find(|field| field.r#type() == Type::String)
                .map(|field| field.number() as u32);
            (format!(".ocx.v1.{}", m.name()), first)
        })
        .collect();
    files
        .iter()
        .flat_map(|f| &f.service)
        .flat_map(|service| {
            let string_fields = &string_fields;
            service.method.iter().map(move |m| Method {
                path: format!("/ocx.v1.{}/{}", service.name(), m.name()),
                input: m.input_type().trim_start_matches('.').to_owned(),
                client_streaming: m.client_streaming(),
                server_streaming: m.server_streaming(),
                string_field: *string_fields
                    .get(m.input_type())
                    .expect("the request type is in package ocx.v1"),
            })
        })
        .collect()
}

/// The key of field `number` with wire type `wire_type`, as a varint.
fn key(number: u32, wire_type: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    prost::encoding::encode_varint(u64::from(number << 3 | wire_type), &mut bytes);
    bytes
}

/// What is wrong, and the bytes.
fn undecodable(method: &Method) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = vec![
        ("a varint longer than ten bytes", vec![0xFF; 11]),
        ("field number 0", vec![0x00, 0x00]),
        (
            "wire type 7, which does not exist",
            [key(1, 7), vec![0]].concat(),
        ),
        (
            "a length-delimited field cut short",
            [key(1, 2), vec![5, b'x']].concat(),
        ),
    ];
    if let Some(n) = method.string_field {
        cases.push((
            "invalid UTF-8 in a string field",
            [key(n, 2), vec![2, 0xC3, 0x28]].concat(),
        ));
        cases.push((
            "a string field sent as a varint",
            [key(n, 0), vec![1]].concat(),
        ));
    }
    cases
}

/// Reads the batch id of an acknowledgement's bytes.
type BatchId = fn(&[u8]) -> i64;

/// A valid first request for each stream of requests, and how to read the batch id of its
/// acknowledgement.
fn valid_first(method: &Method, carrier_id: &str, now: i64) -> (Vec<u8>, BatchId) {
    match method.input.as_str() {
        "ocx.v1.IngestCallRecordsRequest" => (
            pb::IngestCallRecordsRequest {
                batch_id: 1,
                call_records: vec![call(
                    "decode-1",
                    pb::CallDirection::Outbound,
                    "+442079460001",
                    "+33142685300",
                    &tenant(1),
                    now - 3_600,
                )],
            }
            .encode_to_vec(),
            |bytes| {
                pb::IngestCallRecordsResponse::decode(bytes)
                    .expect("an acknowledgement")
                    .batch_id
            },
        ),
        "ocx.v1.UploadCallDurationsRequest" => (
            pb::UploadCallDurationsRequest {
                carrier_id: carrier_id.to_owned(),
                batch_id: 1,
                durations: vec![report("decode-r1", "decode-1", "", now - 3_600, 60_000_000)],
            }
            .encode_to_vec(),
            |bytes| {
                pb::UploadCallDurationsResponse::decode(bytes)
                    .expect("an acknowledgement")
                    .batch_id
            },
        ),
        other => panic!(
            "{other} is a new stream of requests: give it a valid first request here, so the \
             test shows its acknowledgement comes before the error"
        ),
    }
}

#[tokio::test]
async fn every_rpc_answers_bytes_it_cannot_decode_with_invalid_argument_naming_the_type() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let carrier_id = "decode-tel";
    carrier(&platform, carrier_id).await;
    let mut raw = RawClient::new(&server.endpoint(), &server.platform_key);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;

    let methods = methods();
    assert_eq!(
        methods.len(),
        ocx_server::rpcs::RPCS.len(),
        "the contract and the server's table of methods agree"
    );
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for method in &methods {
        for (what, bytes) in undecodable(method) {
            let context = format!("{} with {what}", method.path);
            let (answers, ended) = match (method.client_streaming, method.server_streaming) {
                (false, false) => (Vec::new(), raw.unary(&method.path, bytes).await.map(drop)),
                (false, true) => raw.server_streaming(&method.path, bytes).await,
                (true, _) => {
                    let (first, batch_id) = valid_first(method, carrier_id, now);
                    let (answers, ended) = raw.streaming(&method.path, vec![first, bytes]).await;
                    let ids: Vec<i64> = answers.iter().map(|a| batch_id(a)).collect();
                    assert_eq!(ids, [1], "{context}: the valid batch is acknowledged first");
                    (Vec::new(), ended)
                }
            };
            assert!(answers.is_empty(), "{context}: answered {answers:?}");
            let status = ended.expect_err(&context);
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{context}: {status:?}"
            );
            let expected = format!("the request is not a valid {}", method.input);
            assert!(
                status.message().starts_with(&expected),
                "{context}: {}",
                status.message()
            );
            *sent.entry(method.path.clone()).or_default() += 1;
        }
    }

    // Each is audited like any other refusal, under its method.
    for (path, count) in &sent {
        let events: Vec<pb::AuditEvent> = platform
            .audit_events(pb::ListAuditEventsRequest {
                rpc: path.trim_start_matches('/').to_owned(),
                page_size: 1000,
                ..Default::default()
            })
            .try_collect()
            .await
            .expect("audit");
        let refused = events
            .iter()
            .filter(|e| e.outcome == "INVALID_ARGUMENT" && e.role == "platform")
            .count();
        assert_eq!(refused, *count, "{path}: {events:#?}");
    }
}
