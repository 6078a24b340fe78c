//! Fixtures made through the SDK (carriers with keys, consents, numbers, call records) and the
//! protobuf values tests build them from.

use ocx_client::{Client, pb};

/// A deterministic tenant GUID for test `n`.
pub fn tenant(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{n:012x}")
}

/// A carrier, its key, and a client with that key.
pub struct CarrierFixture {
    /// The carrier id.
    pub carrier_id: String,
    /// A client with the carrier's key.
    pub client: Client,
    /// The carrier's key id.
    pub key_id: String,
    /// The carrier's key (for a client of another kind: a process, the CLI).
    pub secret: String,
}

/// Creates a carrier and a carrier key for it.
pub async fn carrier(platform: &Client, carrier_id: &str) -> CarrierFixture {
    platform
        .create_carrier(carrier_id, &format!("{carrier_id} Ltd"))
        .await
        .expect("create carrier");
    let key = platform
        .create_api_key(pb::CreateApiKeyRequest {
            request_id: String::new(),
            role: pb::ApiKeyRole::Carrier as i32,
            carrier_id: carrier_id.into(),
            display_name: "tests".into(),
        })
        .await
        .expect("create key");
    let client = platform
        .with_key(key.secret.clone())
        .expect("client with key");
    let key_id = key.api_key.expect("key metadata").key_id;
    CarrierFixture {
        carrier_id: carrier_id.into(),
        client,
        secret: key.secret,
        key_id,
    }
}

/// Grants an active consent from `tenant` to `carrier_id` (any country).
pub async fn consent(platform: &Client, carrier_id: &str, tenant: &str) -> pb::Consent {
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: carrier_id.into(),
            tenant_id: tenant.into(),
            ..Default::default()
        })
        .await
        .expect("grant consent")
}

/// An upload item with defaults.
pub fn item(number: &str, tenant: &str) -> pb::NumberUpload {
    pb::NumberUpload {
        number: number.into(),
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

/// Uploads `numbers` to `tenant` and asserts each was created.
pub async fn provision(client: &Client, tenant: &str, numbers: &[String]) {
    let response = client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: numbers.iter().map(|n| item(n, tenant)).collect(),
        })
        .await
        .expect("upload");
    assert_eq!(
        response.created_count as usize,
        numbers.len(),
        "{response:?}"
    );
}

/// `count` numbers `+44 20 7946 xxxx` style from `start`.
pub fn numbers(prefix: &str, start: u32, count: u32) -> Vec<String> {
    (start..start + count)
        .map(|i| format!("{prefix}{i:06}"))
        .collect()
}

/// A valid call record: `direction` decides which of `tenant_number` / `far_end` is the caller.
pub fn call(
    call_id: &str,
    direction: pb::CallDirection,
    tenant_number: &str,
    far_end: &str,
    tenant: &str,
    start_secs: i64,
) -> pb::CallRecord {
    let (caller, callee, call_type) = match direction {
        pb::CallDirection::Inbound => (far_end, tenant_number, pb::CallType::UserIn),
        _ => (tenant_number, far_end, pb::CallType::UserOut),
    };
    pb::CallRecord {
        call_id: call_id.into(),
        correlation_id: format!("{call_id}@sbc.example"),
        version: 1,
        tenant_id: tenant.into(),
        call_type: call_type as i32,
        direction: direction as i32,
        caller_number: caller.into(),
        callee_number: callee.into(),
        start_time: Some(prost_types::Timestamp {
            seconds: start_secs,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: start_secs + 60,
            nanos: 0,
        }),
        final_sip_code: 200,
        final_sip_phrase: "OK".into(),
        q850_cause: 16,
        successful: true,
        ..Default::default()
    }
}

/// Ingests `records` as one batch and returns its acknowledgement.
pub async fn ingest(
    platform: &Client,
    records: Vec<pb::CallRecord>,
) -> pb::IngestCallRecordsResponse {
    use futures_util::StreamExt;
    let acks = platform
        .ingest_call_records(futures_util::stream::iter([records]))
        .await
        .expect("open ingest");
    let mut acks = Box::pin(acks);
    let ack = acks
        .next()
        .await
        .expect("one acknowledgement")
        .expect("acknowledged");
    assert!(
        acks.next().await.is_none(),
        "exactly one acknowledgement per batch"
    );
    ack
}

/// A duration report for `call_id` (may be empty) / `correlation_id`, starting at `start_secs`.
pub fn report(
    record_id: &str,
    call_id: &str,
    correlation_id: &str,
    start_secs: i64,
    duration_micros: i64,
) -> pb::CallDurationReport {
    pb::CallDurationReport {
        record_id: record_id.into(),
        call_id: call_id.into(),
        correlation_id: correlation_id.into(),
        caller_number: "+442079460001".into(),
        callee_number: "+33142685300".into(),
        start_time: Some(prost_types::Timestamp {
            seconds: start_secs,
            nanos: 0,
        }),
        duration: Some(prost_types::Duration {
            seconds: duration_micros.div_euclid(1_000_000),
            nanos: (duration_micros.rem_euclid(1_000_000) * 1000) as i32,
        }),
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_secs()).expect("seconds fit")
}

/// A timestamp at `secs`.
pub fn at(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

/// Sets up, through `platform`: carrier `carrier` with a carrier key of its own, `tenant`'s
/// consent to it, and `count` numbers `<prefix>00000`, `<prefix>00001`, ... on that tenant.
/// Returns the carrier key's secret and the numbers.
pub async fn seed_carrier(
    platform: &Client,
    carrier: &str,
    tenant: &str,
    prefix: &str,
    count: u32,
) -> (String, Vec<String>) {
    let secret = self::carrier(platform, carrier).await.secret;
    consent(platform, carrier, tenant).await;
    let numbers: Vec<String> = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
    let uploaded = platform
        .upload_numbers(pb::UploadNumbersRequest {
            carrier_id: carrier.into(),
            numbers: numbers.iter().map(|n| item(n, tenant)).collect(),
            request_id: String::new(),
        })
        .await
        .expect("numbers");
    assert_eq!(uploaded.created_count as u32, count);
    (secret, numbers)
}

/// The call ids of `carrier`'s records, in listing order, read through `platform`.
pub async fn call_ids(platform: &Client, carrier: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    platform
        .call_records(pb::ListCallRecordsRequest {
            carrier_id: carrier.into(),
            page_size: 1000,
            ..Default::default()
        })
        .map_ok(|r| r.call_id)
        .try_collect()
        .await
        .expect("list call records")
}
