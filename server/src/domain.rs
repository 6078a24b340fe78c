//! Domain types: what the store reads and writes and what the services reason about.
//!
//! They are free of tonic and of generated protobuf structs; `convert` maps them to and from the
//! wire at the edge. Enum codes are the proto enum numbers, written out once here, because they
//! are also what the database stores.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: the one time representation of the store.
pub type Micros = i64;

/// A day in microseconds.
pub const DAY_US: Micros = 86_400 * 1_000_000;

/// The current time in [`Micros`].
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Declares a field-less enum with stable integer codes (shared with the proto and the schema).
macro_rules! coded_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
        impl $name {
            /// The stable code (the proto enum number).
            pub fn code(self) -> i32 { match self { $(Self::$variant => $code),+ } }
            /// The variant for a code, or `None` for unknown codes and 0 (unspecified).
            pub fn from_code(code: i32) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

/// A registered carrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carrier {
    /// The platform-chosen id.
    pub carrier_id: String,
    /// Name shown to people.
    pub display_name: String,
    /// When it was registered.
    pub create_time: Micros,
}

coded_enum!(
    /// Who an API key speaks for.
    Role { Platform = 1, Carrier = 2 }
);

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id, the part of the token before the secret.
    pub key_id: String,
    /// Platform or carrier.
    pub role: Role,
    /// Set for carrier keys.
    pub carrier_id: Option<String>,
    /// Label to tell keys apart.
    pub display_name: String,
    /// SHA-256 of the secret part of the token.
    pub secret_hash: [u8; 32],
    /// When it was issued.
    pub create_time: Micros,
    /// Last authenticated use as last persisted.
    pub last_use_time: Option<Micros>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<Micros>,
}

coded_enum!(
    /// Where a tenant's consent stands.
    ConsentStatus { Active = 1, Suspended = 2, Removed = 3 }
);

/// The tenant's contact for the carrier relationship.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Full name.
    pub full_name: String,
    /// E-mail address.
    pub email: String,
    /// Telephone number.
    pub telephone_number: String,
    /// Company name.
    pub company_name: String,
}

/// A tenant's consent to a carrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    /// The carrier consented to.
    pub carrier_id: String,
    /// Lower-case tenant GUID.
    pub tenant_id: String,
    /// Active, suspended or removed.
    pub status: ConsentStatus,
    /// Accepted countries; empty means any.
    pub countries: Vec<String>,
    /// The tenant's contact.
    pub contact: Contact,
    /// When consent was first given.
    pub consent_time: Micros,
    /// Last change.
    pub update_time: Micros,
}

/// What the platform says about a consent (create or change).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentGrant {
    /// Carrier.
    pub carrier_id: String,
    /// Lower-case tenant GUID.
    pub tenant_id: String,
    /// Active or suspended.
    pub status: ConsentStatus,
    /// Accepted countries.
    pub countries: Vec<String>,
    /// Contact.
    pub contact: Contact,
}

coded_enum!(
    /// Lifecycle of a number.
    NumberState { Provisioned = 1, Assigned = 2, Released = 3 }
);

coded_enum!(
    /// What an assigned number is assigned to.
    AssignmentType { User = 1, Conference = 2, VoiceApplication = 3, ThirdPartyApp = 4 }
);

coded_enum!(
    /// What a number may be used for. Stored as a bit mask (bit = code).
    Capability {
        InboundCalling = 1,
        OutboundCalling = 2,
        UserAssignment = 3,
        ConferenceAssignment = 4,
        VoiceAppAssignment = 5,
        Mobile = 6,
    }
);

impl Capability {
    /// What an upload gets when it names none.
    pub const DEFAULTS: [Capability; 3] = [
        Capability::InboundCalling,
        Capability::OutboundCalling,
        Capability::UserAssignment,
    ];

    /// A set of capabilities as the bit mask the store keeps.
    pub fn to_mask(caps: &[Capability]) -> i64 {
        caps.iter().fold(0, |m, c| m | (1 << c.code()))
    }

    /// The bit mask back to a sorted, de-duplicated list.
    pub fn from_mask(mask: i64) -> Vec<Capability> {
        (1..=6)
            .filter(|code| mask & (1 << code) != 0)
            .filter_map(Capability::from_code)
            .collect()
    }
}

/// The assignment of an assigned number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// What it is assigned to.
    pub assignment_type: AssignmentType,
    /// SIP URI of the assignee.
    pub sip_uri: String,
    /// Object id of the assignee, if known.
    pub user_id: String,
    /// When it was assigned.
    pub assign_time: Micros,
}

/// A phone number as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneNumber {
    /// E.164.
    pub number: String,
    /// Owning carrier.
    pub carrier_id: String,
    /// Tenant it is provisioned to.
    pub tenant_id: String,
    /// Lifecycle state.
    pub state: NumberState,
    /// Set exactly while `state` is `Assigned`.
    pub assignment: Option<Assignment>,
    /// Sorted capability list.
    pub capabilities: Vec<Capability>,
    /// Emergency civic address id.
    pub civic_address_id: String,
    /// Emergency location id.
    pub location_id: String,
    /// ISO country code, if given.
    pub country_code: String,
    /// When it was (last) provisioned.
    pub provision_time: Micros,
    /// Last change.
    pub update_time: Micros,
    /// Etag, +1 on every change.
    pub version: i64,
}

/// One number a carrier uploads (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberUpload {
    /// E.164.
    pub number: String,
    /// Lower-case tenant GUID.
    pub tenant_id: String,
    /// Sorted, de-duplicated, never empty (defaults applied).
    pub capabilities: Vec<Capability>,
    /// Emergency civic address id.
    pub civic_address_id: String,
    /// Emergency location id.
    pub location_id: String,
    /// ISO country code or empty.
    pub country_code: String,
}

/// The outcome of one batch item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemOutcome {
    /// Stored as new.
    Created(PhoneNumber),
    /// Already as requested; nothing changed.
    Unchanged(PhoneNumber),
    /// Changed to what was requested.
    Updated(PhoneNumber),
    /// Not stored, and why.
    Rejected(#[serde(deserialize_with = "refusal_or_words")] Refusal),
}

impl ItemOutcome {
    /// Whether the number changed (and an event was appended).
    pub fn changed(&self) -> bool {
        matches!(self, ItemOutcome::Created(_) | ItemOutcome::Updated(_))
    }
}

/// A refusal as a request-id record holds it: in words (see the `Serialize` impl in
/// `error.rs`), which a replay answers word for word.
fn refusal_or_words<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Refusal, D::Error> {
    Ok(Refusal::InWords(String::deserialize(d)?))
}

/// Why the store refused a write, or one item of a batch: the facts of the case. The store
/// decides ([`crate::store::rules`]); only the error layer (`error::refusal`) turns a refusal
/// into a status code and words for a person, so both backends answer alike, word for word.
///
/// A request-id record keeps a refusal in those words, as every server version has (the
/// `Serialize` impl is in `error.rs`): replicas of this version and of earlier ones, sharing
/// one PostgreSQL database during a rolling upgrade, replay each other's records alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `CreateCarrier`: the id is taken.
    CarrierExists {
        /// The id asked for.
        carrier_id: String,
    },
    /// A write names a carrier that does not exist.
    CarrierNotFound {
        /// The id named.
        carrier_id: String,
    },
    /// `RevokeApiKey`: no such key.
    KeyNotFound {
        /// The id named.
        key_id: String,
    },
    /// `RevokeConsent`: the tenant has no consent for the carrier.
    ConsentNotFound {
        /// The carrier.
        carrier_id: String,
        /// The tenant.
        tenant_id: String,
    },
    /// A request id already used by the same key for a different request (AIP-155).
    RequestIdReused {
        /// The id.
        request_id: String,
        /// The RPC it was used for first.
        rpc: String,
    },
    /// A number upload item: the tenant has no consent for the carrier.
    NoConsent {
        /// The item's tenant.
        tenant_id: String,
    },
    /// A number upload item: the tenant's consent is suspended or removed.
    ConsentInactive {
        /// The item's tenant.
        tenant_id: String,
    },
    /// A number upload item without a country, in a tenant that consented to some countries.
    CountryRequired {
        /// The item's tenant.
        tenant_id: String,
        /// The consented countries, comma-separated.
        countries: String,
    },
    /// A number upload item from a country the tenant did not consent to.
    CountryNotConsented {
        /// The item's tenant.
        tenant_id: String,
        /// The item's country.
        country_code: String,
        /// The consented countries, comma-separated.
        countries: String,
    },
    /// A number upload item: another carrier holds the number (who is not said).
    NumberUnavailable,
    /// A number upload item that would move a number assigned in another tenant.
    NumberAssignedInTenant {
        /// The tenant it is assigned in.
        tenant_id: String,
    },
    /// A number release item: the carrier holds no such number.
    NumberNotFound,
    /// A number release item: the number is assigned in its tenant.
    NumberStillAssigned,
    /// `AssignNumber`/`UnassignNumber`: no carrier provisioned the number.
    NumberNotProvisioned {
        /// The number.
        number: String,
    },
    /// `AssignNumber`/`UnassignNumber`: the number's carrier released it.
    NumberReleased {
        /// The number.
        number: String,
    },
    /// `AssignNumber`/`UnassignNumber`: the number is provisioned to another tenant.
    NumberNotInTenant {
        /// The number.
        number: String,
        /// The tenant named.
        tenant_id: String,
    },
    /// An ingested call record names a carrier that does not exist.
    UnknownCarrier {
        /// The carrier named.
        carrier_id: String,
    },
    /// An ingested call record whose tenant-side number no carrier holds.
    NoCarrierForNumber {
        /// Which side of the call is the tenant's: the callee of an inbound call, the caller
        /// of an outbound one.
        direction: CallDirection,
        /// The number.
        number: String,
    },
    /// An ingested call record older than the stored version.
    OlderVersion {
        /// The record's version.
        version: i64,
        /// The stored version.
        stored: i64,
    },
    /// An ingested call record of the stored version with other content.
    VersionConflict {
        /// The version.
        version: i64,
    },
    /// A refusal read back from a request-id record, in the words it was answered with.
    InWords(String),
}

/// What the platform says when a number is assigned (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct AssignRequest {
    /// E.164.
    pub number: String,
    /// Lower-case tenant GUID the platform believes the number is in.
    pub tenant_id: String,
    /// What it is assigned to.
    pub assignment_type: AssignmentType,
    /// SIP URI.
    pub sip_uri: String,
    /// Optional object id.
    pub user_id: String,
}

/// Filters of a number listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NumberFilter {
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only this state.
    pub state: Option<NumberState>,
    /// Only numbers updated at or after this time.
    pub updated_since: Option<Micros>,
}

coded_enum!(
    /// Kinds of number event.
    NumberEventType { Provisioned = 1, Assigned = 2, Unassigned = 3, Released = 4, Updated = 5 }
);

/// A committed change to a carrier's number.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberEvent {
    /// Per-carrier, gapless, from 1.
    pub sequence: i64,
    /// What happened.
    pub event_type: NumberEventType,
    /// The number as it became.
    pub number: PhoneNumber,
    /// When it was committed.
    pub event_time: Micros,
}

/// One page of a keyset-paginated listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// At most the requested number of items, in the listing's order.
    pub items: Vec<T>,
    /// Whether items follow the last one.
    pub more: bool,
    /// How many items match the filters in all pages.
    pub total: i64,
}

coded_enum!(
    /// Direction of a call from the tenant's side.
    CallDirection { Inbound = 1, Outbound = 2 }
);

coded_enum!(
    /// Kind of PSTN call.
    CallType {
        UserIn = 1,
        UserOut = 2,
        ConferenceIn = 3,
        ConferenceOut = 4,
        Transfer = 5,
        Forwarding = 6,
        EmergencyOut = 7,
        VoiceAppIn = 8,
        VoiceAppOut = 9,
    }
);

coded_enum!(
    /// Same country or not.
    DestinationContext { Domestic = 1, International = 2 }
);

coded_enum!(
    /// The Call Quality Dashboard verdict.
    QualityVerdict { Good = 1, Poor = 2, Unclassified = 3 }
);

coded_enum!(
    /// A metric that can make a stream poor.
    QualityMetric {
        AudioDegradation = 1,
        RoundTripTime = 2,
        PacketLossRate = 3,
        Jitter = 4,
        ConcealedSamples = 5,
    }
);

impl QualityMetric {
    /// A set of metrics as a bit mask (bit = code), as the store keeps it.
    pub fn to_mask(metrics: &[QualityMetric]) -> i64 {
        metrics.iter().fold(0, |m, q| m | (1 << q.code()))
    }

    /// The bit mask back to a list in code order.
    pub fn from_mask(mask: i64) -> Vec<QualityMetric> {
        (1..=5)
            .filter(|c| mask & (1 << c) != 0)
            .filter_map(QualityMetric::from_code)
            .collect()
    }
}

coded_enum!(
    /// Which way a media stream flowed.
    StreamDirection { CallerToCallee = 1, CalleeToCaller = 2 }
);

/// Quality metrics of one media stream; `None` = not measured. Durations in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaStream {
    /// Which way it flowed, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<StreamDirection>,
    /// Codec name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub codec: String,
    /// Average jitter (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_jitter_us: Option<i64>,
    /// Maximum jitter (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jitter_us: Option<i64>,
    /// Average packet loss rate (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_packet_loss_rate: Option<f64>,
    /// Maximum packet loss rate (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_loss_rate: Option<f64>,
    /// Average round trip (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_round_trip_us: Option<i64>,
    /// Maximum round trip (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_round_trip_us: Option<i64>,
    /// Average audio degradation (MOS points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_audio_degradation: Option<f64>,
    /// Average ratio of concealed samples (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_ratio_of_concealed_samples: Option<f64>,
    /// MOS, measured or estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos: Option<f64>,
    /// Whether `mos` is OCX's E-model estimate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mos_estimated: bool,
}

/// A call detail record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The platform's unique call id.
    pub call_id: String,
    /// SIP Call-ID seen by the carrier's SBC.
    pub correlation_id: String,
    /// Revision, from 1.
    pub version: i64,
    /// Owner; on ingest, empty unless the platform named one.
    pub carrier_id: String,
    /// Lower-case tenant GUID.
    pub tenant_id: String,
    /// Kind of call.
    pub call_type: CallType,
    /// Inbound or outbound.
    pub direction: CallDirection,
    /// Caller, E.164.
    pub caller_number: String,
    /// Callee, E.164.
    pub callee_number: String,
    /// The Teams user's SIP URI, if any.
    pub user_sip_uri: String,
    /// INVITE time.
    pub invite_time: Option<Micros>,
    /// Answer (or failure) time.
    pub start_time: Micros,
    /// End time.
    pub end_time: Micros,
    /// Connected duration (µs).
    pub duration_us: i64,
    /// Final SIP code, 0 if unknown.
    pub final_sip_code: i32,
    /// Final SIP phrase.
    pub final_sip_phrase: String,
    /// Q.850 cause, 0 if unknown.
    pub q850_cause: i32,
    /// Whether it connected.
    pub successful: bool,
    /// Domestic or international, if known.
    pub destination_context: Option<DestinationContext>,
    /// Usage country.
    pub usage_country_code: String,
    /// Carrier trunk FQDN.
    pub trunk_fqdn: String,
    /// Media streams.
    pub media_streams: Vec<MediaStream>,
    /// Derived verdict.
    pub quality: QualityVerdict,
    /// Metrics that made it poor.
    pub poor_due_to: Vec<QualityMetric>,
    /// Fingerprint of the content as sent (everything but `version` and derived fields): tells
    /// a duplicate from a stale conflicting record.
    pub content_hash: i64,
    /// Position in the carrier's feed (0 until stored).
    pub feed_sequence: i64,
    /// When this version was stored (0 until stored).
    pub update_time: Micros,
}

impl CallRecord {
    /// The tenant-side number: the one whose owner the record belongs to by default.
    pub fn tenant_number(&self) -> &str {
        match self.direction {
            CallDirection::Inbound => &self.callee_number,
            CallDirection::Outbound => &self.caller_number,
        }
    }
}

/// The outcome of one ingested record.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// Stored as new, for this carrier.
    Created(String),
    /// Replaced a lower version, for this carrier.
    Revised(String),
    /// The same version and content is stored already.
    Unchanged(String),
    /// Not stored, and why.
    Rejected(Refusal),
}

impl IngestOutcome {
    /// Whether a record was created or revised (and feeds have something new).
    pub fn changed(&self) -> bool {
        matches!(self, IngestOutcome::Created(_) | IngestOutcome::Revised(_))
    }
}

/// Filters of a call-record listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRecordFilter {
    /// start_time >= from.
    pub from: Option<Micros>,
    /// start_time < to.
    pub to: Option<Micros>,
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Caller or callee.
    pub number: Option<String>,
    /// Only this direction.
    pub direction: Option<CallDirection>,
    /// Only this type.
    pub call_type: Option<CallType>,
    /// Only this verdict.
    pub quality: Option<QualityVerdict>,
}

/// A duration a carrier reports (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct DurationReport {
    /// The carrier's own id: the idempotency key.
    pub record_id: String,
    /// The platform's call id, or empty.
    pub call_id: String,
    /// The SBC's SIP Call-ID, or empty (not both empty).
    pub correlation_id: String,
    /// Caller, E.164.
    pub caller_number: String,
    /// Callee, E.164.
    pub callee_number: String,
    /// Start as the carrier measured it.
    pub start_time: Micros,
    /// Duration (µs).
    pub duration_us: i64,
}

/// A stored report.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDuration {
    /// The latest content.
    pub report: DurationReport,
    /// Who reported it.
    pub carrier_id: String,
    /// How many corrections replaced earlier content.
    pub corrections: i32,
    /// First received.
    pub create_time: Micros,
    /// Last changed.
    pub update_time: Micros,
}

/// The outcome of one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DurationOutcome {
    /// New.
    Created,
    /// Same record id and content as stored.
    Unchanged,
    /// Same record id, other content: replaced, the old content kept in history.
    Corrected,
}

/// Counts and sums of one reconciliation period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconciliationSummary {
    /// Platform records in the period.
    pub platform_count: i64,
    /// Their summed durations (µs).
    pub platform_duration_us: i64,
    /// Carrier reports counted in the period.
    pub carrier_count: i64,
    /// Their summed durations (µs).
    pub carrier_duration_us: i64,
    /// Pairs within the tolerance.
    pub matched: i64,
    /// Pairs beyond the tolerance.
    pub mismatched: i64,
    /// Platform records without a report.
    pub missing_on_carrier: i64,
    /// Reports without a platform record.
    pub missing_on_platform: i64,
}

coded_enum!(
    /// Kinds of discrepancy.
    DiscrepancyKind { Mismatched = 1, MissingOnCarrier = 2, MissingOnPlatform = 3 }
);

/// One call the two sides disagree on.
#[derive(Debug, Clone, PartialEq)]
pub struct Discrepancy {
    /// What kind.
    pub kind: DiscrepancyKind,
    /// Platform call id (or the report's).
    pub call_id: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Carrier record id, if any.
    pub record_id: String,
    /// The start time that places it in the period.
    pub start_time: Micros,
    /// Caller.
    pub caller_number: String,
    /// Callee.
    pub callee_number: String,
    /// Platform duration, if the platform has the call.
    pub platform_duration_us: Option<i64>,
    /// Carrier duration, if the carrier reported it.
    pub carrier_duration_us: Option<i64>,
}

/// Which entry of a carrier's reconciliation a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReconciliationEntry {
    /// A platform record's, with the report paired with it if any: keyed by its `call_id`.
    Record,
    /// A report paired with no record: keyed by the carrier's `record_id`.
    Report,
}

/// One change of a carrier's reconciliation: an entry as it now stands, or gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationChange {
    /// Its position in the carrier's reconciliation feed.
    pub sequence: i64,
    /// Whose entry.
    pub entry: ReconciliationEntry,
    /// The entry is gone (its report now pairs with a record, or its rows were deleted or
    /// moved to another carrier); only its key and start time are set.
    pub removed: bool,
    /// The platform record's call id, or the lone report's (may be empty).
    pub call_id: String,
    /// The record's correlation id, or the lone report's.
    pub correlation_id: String,
    /// The carrier's record id of the report, or empty when the record has none.
    pub record_id: String,
    /// The start time that places the entry in a period.
    pub start_time: Micros,
    /// The platform's duration, when the entry has a record.
    pub platform_duration_us: Option<i64>,
    /// The carrier's duration, when the entry has a report.
    pub carrier_duration_us: Option<i64>,
}

/// One carrier's reconciliation period and tolerance.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconciliationPeriod {
    /// The carrier.
    pub carrier_id: String,
    /// Start (inclusive).
    pub start: Micros,
    /// End (exclusive).
    pub end: Micros,
    /// Largest difference that still matches (µs).
    pub tolerance_us: i64,
}

/// Where a discrepancy listing resumes: (start time, kind code, row id).
pub type DiscrepancyCursor = (Micros, i32, i64);

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGrouping {
    /// By UTC day.
    Day,
    /// By tenant-side number and direction.
    NumberAndDirection,
}

/// One usage row.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// `YYYY-MM-DD` for day grouping.
    pub day: String,
    /// The tenant-side number for number grouping.
    pub number: String,
    /// The direction for number grouping.
    pub direction: Option<CallDirection>,
    /// Calls.
    pub calls: i64,
    /// Summed durations (µs).
    pub duration_us: i64,
    /// Calls whose duration is the carrier's report.
    pub operator_count: i64,
}

/// How long personal data is kept, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Call records, by their start time.
    pub call_record_days: i32,
    /// Duration reports (and their history), by their start time.
    pub call_duration_days: i32,
    /// Released numbers and their events, by the release time.
    pub released_number_days: i32,
    /// Audit events, by their time.
    pub audit_event_days: i32,
    /// When it last changed; `None` while the defaults hold.
    pub update_time: Option<Micros>,
}

impl RetentionPolicy {
    /// The shortest period for anything but audit events.
    pub const MIN_DAYS: i32 = 1;
    /// The shortest period for audit events: an audit trail that forgets within days is none.
    pub const MIN_AUDIT_DAYS: i32 = 30;
    /// The longest period: ten years.
    pub const MAX_DAYS: i32 = 3650;
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            call_record_days: 90,
            call_duration_days: 90,
            released_number_days: 30,
            audit_event_days: 365,
            update_time: None,
        }
    }
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    /// Call records.
    pub call_records: i64,
    /// Duration reports.
    pub call_durations: i64,
    /// Released numbers.
    pub released_numbers: i64,
    /// Events of those numbers.
    pub number_events: i64,
    /// Audit events.
    pub audit_events: i64,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseCounts {
    /// Call records deleted.
    pub call_records: i64,
    /// Duration reports deleted.
    pub call_durations: i64,
    /// Numbers whose SIP URI and user id were cleared.
    pub numbers: i64,
    /// Past events whose SIP URI and user id were cleared.
    pub number_events: i64,
}

/// One audited call (never a phone number, SIP URI or secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Assigned by the store; 0 before.
    pub id: i64,
    /// When the call was answered.
    pub time: Micros,
    /// The key id used or claimed; empty without one.
    pub key_id: String,
    /// The key's carrier; empty for platform keys.
    pub carrier_id: String,
    /// `platform`, `carrier`, or empty.
    pub role: String,
    /// `package.Service/Method`.
    pub rpc: String,
    /// What the call reads or writes.
    pub resource_kind: String,
    /// Items read or written.
    pub item_count: i64,
    /// The gRPC code name.
    pub outcome: String,
    /// The client's IP address; empty if unknown. For a summary of refusals, the address
    /// summed (`*` for the addresses past the summary's limit).
    pub source: String,
}

/// Which audit events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AuditFilter {
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this carrier's keys.
    pub carrier_id: Option<String>,
    /// Only this method.
    pub rpc: Option<String>,
    /// At or after.
    pub start: Option<Micros>,
    /// Before.
    pub end: Option<Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_refusals_read_back_in_words() {
        // As every server version records them: the words.
        let old: ItemOutcome =
            serde_json::from_str(r#"{"Rejected":"number not found"}"#).expect("decode");
        assert_eq!(
            old,
            ItemOutcome::Rejected(Refusal::InWords("number not found".into()))
        );
    }
}

/// GetQualitySummary's time buckets (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityBucket {
    /// The whole period as one bucket.
    Whole,
    /// Hours.
    Hour,
    /// Days.
    Day,
}

coded_enum!(
    /// A dimension GetQualitySummary groups and filters calls by.
    QualityDimension {
        TrunkFqdn = 1,
        UsageCountryCode = 2,
        DestinationContext = 3,
        CallType = 4,
        Direction = 5,
        Codec = 6,
    }
);

/// Which calls a quality summary counts: each non-empty list keeps the calls with one of its
/// values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityFilter {
    /// Trunk FQDNs.
    pub trunk_fqdns: Vec<String>,
    /// Usage countries.
    pub usage_country_codes: Vec<String>,
    /// Destination contexts.
    pub destination_contexts: Vec<DestinationContext>,
    /// Call types.
    pub call_types: Vec<CallType>,
    /// Directions.
    pub directions: Vec<CallDirection>,
    /// Codecs.
    pub codecs: Vec<String>,
}

/// A quality summary's question, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityQuery {
    /// One carrier, or every carrier (`None`, platform keys only).
    pub carrier_id: Option<String>,
    /// The period's first UTC hour (hours since the epoch), inclusive.
    pub start_hour: i64,
    /// The period's last UTC hour, exclusive.
    pub end_hour: i64,
    /// Bucket size.
    pub bucket: QualityBucket,
    /// Dimensions to group by, in sort order, each once.
    pub group_by: Vec<QualityDimension>,
    /// Which calls count.
    pub filter: QualityFilter,
}
