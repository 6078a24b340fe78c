//! The contract's RPCs, each declared once: who may call it, whether it streams, and the kind
//! of resource its audit events name.
//!
//! [`crate::gate`] looks up every OCX call here before a handler runs: a method not in
//! [`RPCS`] is refused, a carrier key calling a [`Access::PlatformOnly`] method is refused, a
//! [`Shape::Streaming`] method takes one of the key's stream slots; the call's audit event
//! ([`crate::audit`]) takes its resource kind from the row. Handlers therefore never check the
//! role themselves: those that act for a carrier still read the [`crate::auth::Principal`] to
//! scope the call to it.
//!
//! A module of its own rather than part of `audit`: the audit trail is one reader of the
//! table, the gate's refusals are the others, and a row is the one place a new RPC is given a
//! role. It stays in the server rather than in `ocx-api` because it carries server facts (audit
//! resource kinds, which keys this server admits) that are not part of the wire contract; a
//! unit test holds it to the contract's descriptor set, and the end-to-end authorization matrix
//! checks every row against both roles.

use Access::{CarrierAndPlatform, PlatformOnly};
use Lane::{Long, Short};
use Shape::{Streaming, Unary};

use crate::auth::Principal;

/// The protobuf package of every OCX service: a call to `/<PACKAGE>.<Service>/<Method>` is an
/// OCX call (gated and audited); health and reflection are outside it.
pub const PACKAGE: &str = "ocx.v1";

/// Which keys may call an RPC (`proto/ocx/v1/PROTOCOL.md`, "Authentication and scope").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Platform keys only; a carrier key is PERMISSION_DENIED by the gate.
    PlatformOnly,
    /// Carrier keys, each acting for its own carrier, and platform keys, naming the carrier:
    /// the handler scopes the call (`Ctx::carrier_scope`).
    CarrierAndPlatform,
}

impl Access {
    /// Whether `principal` may call an RPC with this access.
    pub fn admits(self, principal: &Principal) -> bool {
        match (self, principal) {
            (Access::CarrierAndPlatform, _)
            | (Access::PlatformOnly, Principal::Platform { .. }) => true,
            (Access::PlatformOnly, Principal::Carrier { .. }) => false,
        }
    }
}

/// One message each way, or a stream in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One request, one response: bounded by the default deadline when the caller sets none.
    Unary,
    /// Client, server or bidirectional streaming: holds one of the key's stream slots while
    /// open, and is audited when it ends.
    Streaming,
}

/// How long a call may hold a reader: point reads and writes are short; listings and the
/// reconciliation and usage queries, which may read a whole period, are long, and one carrier
/// may have only so many running at once (`Limits::long_reads_per_carrier`), so that its long
/// queries leave the readers to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// A point read, a write, a stream (streams have their own limits).
    Short,
    /// A listing page or a query over a period.
    Long,
}

/// One RPC of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rpc {
    /// The service, without the package: `AdminService`.
    pub service: &'static str,
    /// The method: `CreateCarrier`.
    pub method: &'static str,
    /// Which keys may call it; the gate refuses the others.
    pub access: Access,
    /// Unary or streaming, as in the `.proto` (the unit test below holds the two together).
    pub shape: Shape,
    /// What it reads or writes, as its audit events name it (`AuditEvent::resource_kind`).
    pub resource_kind: &'static str,
    /// Short, or a long read that counts against its carrier's share.
    pub lane: Lane,
}

impl Rpc {
    /// The full method, as in audit events and the HTTP/2 path: `ocx.v1.Service/Method`.
    pub fn path(&self) -> String {
        format!("{PACKAGE}.{}/{}", self.service, self.method)
    }

    /// Whether it streams.
    pub fn streaming(&self) -> bool {
        self.shape == Shape::Streaming
    }
}

/// A row of [`RPCS`] (a function so that each row fits on one line).
const fn rpc(
    service: &'static str,
    method: &'static str,
    access: Access,
    shape: Shape,
    resource_kind: &'static str,
    lane: Lane,
) -> Rpc {
    Rpc {
        service,
        method,
        access,
        shape,
        resource_kind,
        lane,
    }
}

/// Every RPC of the OCX services. A method not here is refused by the gate (UNIMPLEMENTED), and
/// the unit test below fails until every RPC of the contract has its row.
#[rustfmt::skip]
pub const RPCS: &[Rpc] = &[
    //  service                  method                      access              shape      resource kind       lane
    rpc("AdminService",          "CreateCarrier",            PlatformOnly,       Unary,     "carrier",         Short),
    rpc("AdminService",          "ListCarriers",             PlatformOnly,       Unary,     "carrier",         Short),
    rpc("AdminService",          "CreateApiKey",             PlatformOnly,       Unary,     "api_key",         Short),
    rpc("AdminService",          "RevokeApiKey",             PlatformOnly,       Unary,     "api_key",         Short),
    rpc("AdminService",          "ListApiKeys",              PlatformOnly,       Unary,     "api_key",         Short),
    rpc("AdminService",          "GetRetentionPolicy",       PlatformOnly,       Unary,     "retention_policy",Short),
    rpc("AdminService",          "SetRetentionPolicy",       PlatformOnly,       Unary,     "retention_policy",Short),
    rpc("AdminService",          "PurgeExpiredData",         PlatformOnly,       Unary,     "expired_data",    Short),
    rpc("AdminService",          "EraseTenantData",          PlatformOnly,       Unary,     "tenant_data",     Short),
    rpc("AdminService",          "ListAuditEvents",          PlatformOnly,       Unary,     "audit_event",     Long),
    rpc("ConsentService",        "ListConsents",             CarrierAndPlatform, Unary,     "consent",         Short),
    rpc("NumberService",         "UploadNumbers",            CarrierAndPlatform, Unary,     "number",          Short),
    rpc("NumberService",         "ReleaseNumbers",           CarrierAndPlatform, Unary,     "number",          Short),
    rpc("NumberService",         "GetNumber",                CarrierAndPlatform, Unary,     "number",          Short),
    rpc("NumberService",         "ListNumbers",              CarrierAndPlatform, Unary,     "number",          Long),
    rpc("NumberService",         "WatchNumberEvents",        CarrierAndPlatform, Streaming, "number_event",    Short),
    rpc("CallRecordService",     "GetCallRecord",            CarrierAndPlatform, Unary,     "call_record",     Short),
    rpc("CallRecordService",     "ListCallRecords",          CarrierAndPlatform, Unary,     "call_record",     Long),
    rpc("CallRecordService",     "StreamCallRecords",        CarrierAndPlatform, Streaming, "call_record",     Short),
    rpc("CallRecordService",     "GetQualitySummary",        CarrierAndPlatform, Unary,     "quality_summary", Long),
    rpc("CallDurationService",   "ReportCallDurations",      CarrierAndPlatform, Unary,     "call_duration",   Short),
    rpc("CallDurationService",   "UploadCallDurations",      CarrierAndPlatform, Streaming, "call_duration",   Short),
    rpc("CallDurationService",   "ListCallDurations",        CarrierAndPlatform, Unary,     "call_duration",   Long),
    rpc("ReconciliationService", "GetReconciliationSummary", CarrierAndPlatform, Unary,     "reconciliation",  Long),
    rpc("ReconciliationService", "ListDiscrepancies",        CarrierAndPlatform, Unary,     "reconciliation",  Long),
    rpc("ReconciliationService", "WatchReconciliation",      CarrierAndPlatform, Streaming, "reconciliation",  Short),
    rpc("PlatformService",       "GrantConsent",             PlatformOnly,       Unary,     "consent",         Short),
    rpc("PlatformService",       "RevokeConsent",            PlatformOnly,       Unary,     "consent",         Short),
    rpc("PlatformService",       "AssignNumber",             PlatformOnly,       Unary,     "number",          Short),
    rpc("PlatformService",       "UnassignNumber",           PlatformOnly,       Unary,     "number",          Short),
    rpc("PlatformService",       "IngestCallRecords",        PlatformOnly,       Streaming, "call_record",     Short),
    rpc("PlatformService",       "GetTenantUsage",           PlatformOnly,       Unary,     "usage",           Long),
];

/// Whether `path` (`package.Service/Method`, the HTTP/2 path without its leading `/`) names a
/// method of the OCX package, known or not.
pub fn in_package(path: &str) -> bool {
    path.strip_prefix(PACKAGE)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The row of `path` (`ocx.v1.Service/Method`), if it is an RPC of the contract.
pub fn find(path: &str) -> Option<&'static Rpc> {
    let (service, method) = path
        .strip_prefix(PACKAGE)?
        .strip_prefix('.')?
        .split_once('/')?;
    RPCS.iter()
        .find(|rpc| rpc.service == service && rpc.method == method)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;

    /// Every `(Service, Method)` of package `ocx.v1` in the contract's descriptor set, with its
    /// shape.
    fn contract() -> BTreeMap<(String, String), Shape> {
        let set = prost_types::FileDescriptorSet::decode(ocx_api::FILE_DESCRIPTOR_SET)
            .expect("the contract's descriptor set decodes");
        set.file
            .iter()
            .filter(|file| file.package() == PACKAGE)
            .flat_map(|file| &file.service)
            .flat_map(|service| {
                service.method.iter().map(move |method| {
                    let shape = if method.client_streaming() || method.server_streaming() {
                        Streaming
                    } else {
                        Unary
                    };
                    ((service.name().to_owned(), method.name().to_owned()), shape)
                })
            })
            .collect()
    }

    #[test]
    fn the_table_lists_exactly_the_rpcs_of_the_contract() {
        let contract = contract();
        assert!(
            contract.len() >= 30,
            "too few methods in the descriptor set: {contract:?}"
        );
        let table: BTreeMap<(String, String), Shape> = RPCS
            .iter()
            .map(|r| ((r.service.to_owned(), r.method.to_owned()), r.shape))
            .collect();
        assert_eq!(table.len(), RPCS.len(), "an RPC has two rows");
        let without_row: Vec<_> = contract
            .keys()
            .filter(|k| !table.contains_key(*k))
            .collect();
        let not_in_contract: Vec<_> = table
            .keys()
            .filter(|k| !contract.contains_key(*k))
            .collect();
        assert!(
            without_row.is_empty() && not_in_contract.is_empty(),
            "rpcs::RPCS must have one row per RPC of the contract; without a row (give it one, \
             with its access): {without_row:?}; not in the contract: {not_in_contract:?}"
        );
        assert_eq!(table, contract, "a row's shape disagrees with its .proto");
        for rpc in RPCS {
            assert!(
                rpc.lane == Short
                    || (rpc.shape == Unary
                        && (rpc.method.starts_with("List") || rpc.method.starts_with("Get"))),
                "{} is a long read but not a unary read",
                rpc.path()
            );
            assert!(
                !rpc.resource_kind.is_empty(),
                "{} has no resource kind",
                rpc.path()
            );
        }
    }

    #[test]
    fn find_knows_the_rows_and_nothing_else() {
        for rpc in RPCS {
            assert_eq!(find(&rpc.path()), Some(rpc));
            assert!(in_package(&rpc.path()));
        }
        let admin = find("ocx.v1.AdminService/CreateCarrier");
        assert_eq!(admin.map(|r| r.access), Some(PlatformOnly));
        let numbers = find("ocx.v1.NumberService/WatchNumberEvents");
        assert_eq!(
            numbers.map(|r| (r.access, r.shape)),
            Some((CarrierAndPlatform, Streaming))
        );
        for unknown in [
            "ocx.v1.AdminService/DropEverything",
            "ocx.v1.NoSuchService/CreateCarrier",
            "ocx.v1.AdminService",
            "ocx.v1.AdminService/CreateCarrier/",
            "ocx.v1/AdminService/CreateCarrier",
            "ocx.v2.AdminService/CreateCarrier",
            "ocx.v1x.AdminService/CreateCarrier",
            "grpc.health.v1.Health/Check",
            "",
        ] {
            assert_eq!(find(unknown), None, "{unknown}");
        }
        assert!(in_package("ocx.v1.AdminService/DropEverything"));
        assert!(!in_package("ocx.v1x.AdminService/CreateCarrier"));
        assert!(!in_package("grpc.health.v1.Health/Check"));
        assert!(!in_package(
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[test]
    fn platform_only_admits_only_platform_keys() {
        let platform = Principal::Platform { key_id: "p".into() };
        let carrier = Principal::Carrier {
            key_id: "c".into(),
            carrier_id: "c1".into(),
        };
        assert!(PlatformOnly.admits(&platform));
        assert!(!PlatformOnly.admits(&carrier));
        assert!(CarrierAndPlatform.admits(&platform));
        assert!(CarrierAndPlatform.admits(&carrier));
    }
}
