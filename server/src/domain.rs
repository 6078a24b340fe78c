//! Domain types: what the store reads and writes and what the services reason about.
//!
//! They are free of tonic and of generated protobuf structs; `convert` maps them to and from the
//! wire at the edge. Enum codes are the proto enum numbers, written out once here, because they
//! are also what the database stores.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: the one time representation of the store.
pub type Micros = i64;

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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// Stored as new.
    Created(PhoneNumber),
    /// Already as requested; nothing changed.
    Unchanged(PhoneNumber),
    /// Changed to what was requested.
    Updated(PhoneNumber),
    /// Not stored, with the reason for a person.
    Rejected(String),
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
