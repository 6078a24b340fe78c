//! [`Client`]: the connection (TLS, keep-alives), the API key, request ids and retries of
//! writes (AIP-155), and the unary calls of every service. The other modules add the paged,
//! streaming and following calls.

use std::fmt;
use std::time::Duration;

use futures_util::Stream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};
use crate::paging;
use ocx_api::pb;

use ocx_api::metadata::{AUTHORIZATION, BEARER_PREFIX};
use pb::admin_service_client::AdminServiceClient;
use pb::consent_service_client::ConsentServiceClient;
use pb::number_service_client::NumberServiceClient;
use pb::platform_service_client::PlatformServiceClient;

/// How long [`Client::connect`] waits for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 ping interval: lets a long `WatchNumberEvents` or `StreamCallRecords` notice a dead
/// peer it would otherwise wait on forever (a silent stream is normal, so only pings can tell).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long an unanswered ping may take before the connection is declared dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings for [`Client::connect_tls`], PEM-encoded.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// The CA that issued the server's certificate; `None`: the platform's trusted roots are
    /// not consulted, so set it (OCX servers commonly use a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and its key, for servers that require mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to expect in the server's certificate, when it differs from the endpoint's
    /// host (e.g. connecting to an IP address).
    pub domain: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl TlsOptions {
    /// As tonic's client TLS configuration.
    fn client_config(self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = self.domain {
            config = config.domain_name(domain);
        }
        config
    }
}

/// How long a write that carries a request id is retried while the server answers UNAVAILABLE
/// (it is restarting, or its storage is full for a moment), unless the client is given another
/// budget ([`Client::with_retry_budget`]): longer than a normal restart.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Wait before the first retry of such a write; doubled for each next one, up to
/// [`WRITE_BACKOFF_MAX`].
pub(crate) const WRITE_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two retries of a write.
pub(crate) const WRITE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A fresh request id (AIP-155): a random (version 4) UUID.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `message` with a fresh request id, unless the caller set one.
pub(crate) fn with_request_id<M: ocx_api::RequestId>(mut message: M) -> M {
    if message.request_id_mut().is_empty() {
        *message.request_id_mut() = new_request_id();
    }
    message
}

/// How long the server asks a refused call to wait, when it refused it for a limit that frees
/// itself with time (`RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo`: a rate, a carrier's
/// share of the long reads, the server's streams); `None` for any other answer.
pub(crate) fn retry_hint(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    status.get_details_retry_info()?.retry_delay
}

/// Whether a call failed because its connection broke under it rather than because the server
/// answered: the server closed an idle connection just as the call was sent on it, or the
/// connection died. tonic reports those as `CANCELLED`, `UNAVAILABLE`, `UNKNOWN` or `INTERNAL`
/// with the transport's error as the source, which a status sent by the server never has. Sent
/// again once, such a call goes out on a new connection.
pub(crate) fn broken_connection(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Cancelled | Code::Unavailable | Code::Unknown | Code::Internal
    ) && std::error::Error::source(status).is_some()
}

/// Sends a write with a request id (a fresh one unless the caller set one), sending it again
/// once at once if its connection broke under it ([`broken_connection`]), retrying
/// UNAVAILABLE with backoff, and a refusal with a retry hint ([`retry_hint`]) after the wait it
/// names, for the client's retry budget: safe, because the server answers a retried request
/// id with the first answer and does nothing again. Evaluates to the response message.
macro_rules! send_once {
    ($client:expr, $stub:ident, $method:ident, $message:expr) => {{
        let message = $crate::client::with_request_id($message);
        let started = std::time::Instant::now();
        let mut backoff = $crate::client::WRITE_BACKOFF;
        let mut resent = false;
        loop {
            let mut stub = $client.$stub();
            match stub.$method($client.request(message.clone())).await {
                Ok(response) => break response.into_inner(),
                Err(status) if !resent && $crate::client::broken_connection(&status) => {
                    resent = true;
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && started.elapsed() + backoff <= $client.retry_budget =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min($crate::client::WRITE_BACKOFF_MAX);
                }
                Err(status) => match $crate::client::retry_hint(&status) {
                    Some(wait) if started.elapsed() + wait <= $client.retry_budget => {
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Err(status.into()),
                },
            }
        }
    }};
}

/// Sends a read; sends it again once at once if its connection broke under it
/// ([`broken_connection`]), and after the wait the server names when it refuses it with a
/// retry hint ([`retry_hint`]: over a rate, or over the carrier's share of the long reads), for
/// the client's retry budget. Evaluates to the response message.
macro_rules! read {
    ($client:expr, $stub:ident, $method:ident, $message:expr) => {{
        let message = $message;
        let started = std::time::Instant::now();
        let mut resent = false;
        loop {
            let mut stub = $client.$stub();
            match stub.$method($client.request(message.clone())).await {
                Ok(response) => break response.into_inner(),
                Err(status) if !resent && $crate::client::broken_connection(&status) => {
                    resent = true;
                }
                Err(status) => match $crate::client::retry_hint(&status) {
                    Some(wait) if started.elapsed() + wait <= $client.retry_budget => {
                        tokio::time::sleep(wait).await;
                    }
                    _ => return Err(status.into()),
                },
            }
        }
    }};
}

/// A connection to an OCX server and the API key every call is made with.
///
/// Cheap to clone: clones share the connection (tonic multiplexes calls over it).
#[derive(Clone)]
pub struct Client {
    /// The gRPC channel; it reconnects by itself when the connection drops.
    pub(crate) channel: Channel,
    /// `Bearer <key>`, parsed once so a bad key fails at construction and not on every call;
    /// `None` for an empty key, which sends no header (the server answers `UNAUTHENTICATED`).
    authorization: Option<MetadataValue<Ascii>>,
    /// How long writes are retried on UNAVAILABLE ([`DEFAULT_RETRY_BUDGET`] unless set).
    pub(crate) retry_budget: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: say only whether there is one.
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .field("has_key", &self.authorization.is_some())
            .finish()
    }
}

impl Client {
    /// Connects to `endpoint` (e.g. `"http://127.0.0.1:50051"`) now, and makes every call with
    /// `key`, the secret returned by `CreateApiKey`.
    ///
    /// Fails with [`Error::Config`] for a malformed endpoint or a key that cannot be sent as a
    /// header, and [`Error::Transport`] if the server cannot be reached.
    pub async fn connect(endpoint: impl Into<String>, key: impl Into<String>) -> Result<Client> {
        Client::connect_tls(endpoint, key, None).await
    }

    /// [`Client::connect`] over TLS when `tls` is given (the endpoint is then `https://...`):
    /// the server's certificate is checked against `tls.ca_pem`, and a client certificate is
    /// presented when the server asks for one (mutual TLS).
    pub async fn connect_tls(
        endpoint: impl Into<String>,
        key: impl Into<String>,
        tls: Option<TlsOptions>,
    ) -> Result<Client> {
        let authorization = parse_key(key.into())?;
        let endpoint = endpoint.into();
        let mut builder = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| Error::Config(format!("endpoint {endpoint:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls.client_config())
                .map_err(|e| Error::Config(format!("TLS settings: {e}")))?;
        }
        let channel = builder.connect().await?;
        Ok(Client {
            channel,
            authorization,
            retry_budget: DEFAULT_RETRY_BUDGET,
        })
    }

    /// Builds a client on an existing channel (a lazy one is fine: it connects on first use).
    pub fn from_channel(channel: Channel, key: impl Into<String>) -> Result<Client> {
        Ok(Client {
            channel,
            authorization: parse_key(key.into())?,
            retry_budget: DEFAULT_RETRY_BUDGET,
        })
    }

    /// The same connection, calling with another key (and the same retry budget).
    pub fn with_key(&self, key: impl Into<String>) -> Result<Client> {
        let mut client = Client::from_channel(self.channel.clone(), key)?;
        client.retry_budget = self.retry_budget;
        Ok(client)
    }

    /// The same client, retrying writes on UNAVAILABLE, and calls refused with a retry hint
    /// after the wait it names, for at most `budget` (zero: never). Writes carry a request id,
    /// so a retry never does a write twice.
    pub fn with_retry_budget(mut self, budget: Duration) -> Client {
        self.retry_budget = budget;
        self
    }

    // ----- AdminService (platform key) -----

    /// Registers a carrier. `ALREADY_EXISTS` if the id is taken.
    pub async fn create_carrier(
        &self,
        carrier_id: &str,
        display_name: &str,
    ) -> Result<pb::Carrier> {
        let message = pb::CreateCarrierRequest {
            carrier_id: carrier_id.to_owned(),
            display_name: display_name.to_owned(),
            ..Default::default()
        };
        let response = send_once!(self, admin, create_carrier, message);
        response.carrier.ok_or_else(|| Error::missing("carrier"))
    }

    /// One page of carriers, ordered by id. See [`Client::carriers`] for all of them.
    pub async fn list_carriers(
        &self,
        req: pb::ListCarriersRequest,
    ) -> Result<pb::ListCarriersResponse> {
        Ok(read!(self, admin, list_carriers, req))
    }

    /// Issues an API key. The response's `secret` is shown only this once.
    pub async fn create_api_key(
        &self,
        req: pb::CreateApiKeyRequest,
    ) -> Result<pb::CreateApiKeyResponse> {
        // A request id, so that a retry by the caller creates no second key; no retry here,
        // because a retried CreateApiKey cannot be answered with the secret again.
        Ok(self
            .admin()
            .create_api_key(self.request(with_request_id(req)))
            .await?
            .into_inner())
    }

    /// Revokes a key at once; revoking a revoked key returns it unchanged.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<pb::ApiKey> {
        let message = pb::RevokeApiKeyRequest {
            key_id: key_id.to_owned(),
            ..Default::default()
        };
        let response = send_once!(self, admin, revoke_api_key, message);
        response.api_key.ok_or_else(|| Error::missing("api_key"))
    }

    /// One page of API keys (never their secrets). See [`Client::api_keys`] for all of them.
    pub async fn list_api_keys(
        &self,
        req: pb::ListApiKeysRequest,
    ) -> Result<pb::ListApiKeysResponse> {
        Ok(read!(self, admin, list_api_keys, req))
    }

    /// The retention policy in force.
    pub async fn get_retention_policy(&self) -> Result<pb::RetentionPolicy> {
        let request = pb::GetRetentionPolicyRequest {};
        let response = read!(self, admin, get_retention_policy, request);
        response.policy.ok_or_else(|| Error::missing("policy"))
    }

    /// Replaces the retention policy; returns the policy now in force.
    pub async fn set_retention_policy(
        &self,
        policy: pb::RetentionPolicy,
    ) -> Result<pb::RetentionPolicy> {
        let message = pb::SetRetentionPolicyRequest {
            policy: Some(policy),
            ..Default::default()
        };
        let response = send_once!(self, admin, set_retention_policy, message);
        response.policy.ok_or_else(|| Error::missing("policy"))
    }

    /// Deletes now what the retention policy no longer allows; returns the counts.
    pub async fn purge_expired_data(&self) -> Result<pb::PurgeExpiredDataResponse> {
        Ok(send_once!(
            self,
            admin,
            purge_expired_data,
            pb::PurgeExpiredDataRequest::default()
        ))
    }

    /// Erases a tenant's personal data; returns the counts.
    pub async fn erase_tenant_data(&self, tenant_id: &str) -> Result<pb::EraseTenantDataResponse> {
        let message = pb::EraseTenantDataRequest {
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        };
        Ok(send_once!(self, admin, erase_tenant_data, message))
    }

    /// One page of audit events, newest first. See [`Client::audit_events`] for all of them.
    pub async fn list_audit_events(
        &self,
        req: pb::ListAuditEventsRequest,
    ) -> Result<pb::ListAuditEventsResponse> {
        Ok(read!(self, admin, list_audit_events, req))
    }

    /// Every audit event matching `req`'s filters, newest first, page after page.
    pub fn audit_events(
        &self,
        req: pb::ListAuditEventsRequest,
    ) -> impl Stream<Item = Result<pb::AuditEvent>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListAuditEventsRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_audit_events(req).await?;
                Ok((page.audit_events, page.next_page_token))
            }
        })
    }

    // ----- consents: ConsentService (carrier view) and PlatformService (changes) -----

    /// One page of consents. See [`Client::consents`] for all of them.
    pub async fn list_consents(
        &self,
        req: pb::ListConsentsRequest,
    ) -> Result<pb::ListConsentsResponse> {
        Ok(read!(self, consent, list_consents, req))
    }

    /// Records or changes a tenant's consent to a carrier (platform key).
    pub async fn grant_consent(&self, req: pb::GrantConsentRequest) -> Result<pb::Consent> {
        let response = send_once!(self, platform, grant_consent, req);
        response.consent.ok_or_else(|| Error::missing("consent"))
    }

    /// Marks a tenant's consent to a carrier REMOVED (platform key).
    pub async fn revoke_consent(&self, carrier_id: &str, tenant_id: &str) -> Result<pb::Consent> {
        let message = pb::RevokeConsentRequest {
            carrier_id: carrier_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        };
        let response = send_once!(self, platform, revoke_consent, message);
        response.consent.ok_or_else(|| Error::missing("consent"))
    }

    // ----- NumberService -----

    /// Uploads up to [`ocx_api::MAX_BATCH_ITEMS`] numbers. Bad items are rejected one by one in
    /// the results, not as an error; the call fails only as a whole (e.g. too many items).
    pub async fn upload_numbers(
        &self,
        req: pb::UploadNumbersRequest,
    ) -> Result<pb::UploadNumbersResponse> {
        Ok(send_once!(self, number_service, upload_numbers, req))
    }

    /// Releases up to [`ocx_api::MAX_BATCH_ITEMS`] numbers, with one result per number.
    pub async fn release_numbers(
        &self,
        req: pb::ReleaseNumbersRequest,
    ) -> Result<pb::ReleaseNumbersResponse> {
        Ok(send_once!(self, number_service, release_numbers, req))
    }

    /// Reads one number. `carrier_id`: empty for a carrier key, required for a platform key.
    pub async fn get_number(&self, carrier_id: &str, number: &str) -> Result<pb::PhoneNumber> {
        let request = pb::GetNumberRequest {
            carrier_id: carrier_id.to_owned(),
            number: number.to_owned(),
        };
        let response = read!(self, number_service, get_number, request);
        response
            .phone_number
            .ok_or_else(|| Error::missing("phone_number"))
    }

    /// One page of numbers. See [`Client::numbers`] for all of them.
    pub async fn list_numbers(
        &self,
        req: pb::ListNumbersRequest,
    ) -> Result<pb::ListNumbersResponse> {
        Ok(read!(self, number_service, list_numbers, req))
    }

    // ----- PlatformService numbers (platform key) -----

    /// Records that a number was assigned in its tenant; the carrier gets an ASSIGNED event.
    pub async fn assign_number(&self, req: pb::AssignNumberRequest) -> Result<pb::PhoneNumber> {
        let response = send_once!(self, platform, assign_number, req);
        response
            .phone_number
            .ok_or_else(|| Error::missing("phone_number"))
    }

    /// Records that a number was unassigned; a no-op if it is not assigned.
    pub async fn unassign_number(&self, number: &str, tenant_id: &str) -> Result<pb::PhoneNumber> {
        let message = pb::UnassignNumberRequest {
            number: number.to_owned(),
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        };
        let response = send_once!(self, platform, unassign_number, message);
        response
            .phone_number
            .ok_or_else(|| Error::missing("phone_number"))
    }

    // ----- every page of a listing -----

    /// Every carrier, page after page, starting at `req.page_token` (normally empty). An error
    /// is the last item.
    pub fn carriers(
        &self,
        req: pb::ListCarriersRequest,
    ) -> impl Stream<Item = Result<pb::Carrier>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListCarriersRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_carriers(req).await?;
                Ok((page.carriers, page.next_page_token))
            }
        })
    }

    /// Every API key matching `req`'s filter, page after page. An error is the last item.
    pub fn api_keys(
        &self,
        req: pb::ListApiKeysRequest,
    ) -> impl Stream<Item = Result<pb::ApiKey>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListApiKeysRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_api_keys(req).await?;
                Ok((page.api_keys, page.next_page_token))
            }
        })
    }

    /// Every consent matching `req`'s filters, page after page. An error is the last item.
    pub fn consents(
        &self,
        req: pb::ListConsentsRequest,
    ) -> impl Stream<Item = Result<pb::Consent>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListConsentsRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_consents(req).await?;
                Ok((page.consents, page.next_page_token))
            }
        })
    }

    /// Every number matching `req`'s filters, in number order, page after page. An error is the
    /// last item.
    pub fn numbers(
        &self,
        req: pb::ListNumbersRequest,
    ) -> impl Stream<Item = Result<pb::PhoneNumber>> + Send + 'static {
        let client = self.clone();
        paging::pages(req.page_token.clone(), move |page_token| {
            let (client, req) = (
                client.clone(),
                pb::ListNumbersRequest {
                    page_token,
                    ..req.clone()
                },
            );
            async move {
                let page = client.list_numbers(req).await?;
                Ok((page.phone_numbers, page.next_page_token))
            }
        })
    }

    // ----- plumbing -----

    /// Wraps a message in a request carrying the `authorization` header and, when the call is
    /// made inside an OpenTelemetry span (through the `opentelemetry` API, or `tracing` with
    /// `tracing-opentelemetry`), that span's W3C `traceparent`: the server's spans for the
    /// call then join the caller's trace.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        if let Some(value) = traceparent() {
            request.metadata_mut().insert("traceparent", value);
        }
        request
    }

    /// A stub for AdminService on the shared channel (cheap: it clones a handle).
    fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    /// A stub for ConsentService on the shared channel.
    fn consent(&self) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.channel.clone())
    }

    /// A stub for NumberService on the shared channel.
    pub(crate) fn number_service(&self) -> NumberServiceClient<Channel> {
        NumberServiceClient::new(self.channel.clone())
    }

    /// A stub for PlatformService on the shared channel.
    pub(crate) fn platform(&self) -> PlatformServiceClient<Channel> {
        PlatformServiceClient::new(self.channel.clone())
    }
}

/// `Bearer <key>` as a sensitive header value (kept out of logs), or `None` for an empty key.
fn parse_key(key: String) -> Result<Option<MetadataValue<Ascii>>> {
    if key.is_empty() {
        return Ok(None);
    }
    let mut value = MetadataValue::try_from(format!("{BEARER_PREFIX}{key}")).map_err(|_| {
        // Not echoing the key: it is a secret.
        Error::Config("the key contains characters that cannot be sent in a header".into())
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// `00-<trace id>-<span id>-<flags>` (W3C Trace Context) of the current OpenTelemetry span, if
/// there is a valid one.
fn traceparent() -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    use opentelemetry::trace::TraceContextExt;
    let context = opentelemetry::Context::current();
    let span = context.span();
    let parent = span.span_context();
    if !parent.is_valid() {
        return None;
    }
    format!(
        "00-{}-{}-{:02x}",
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags().to_u8()
    )
    .parse()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_bearer_headers() {
        let value = parse_key("abc.def".into())
            .expect("valid")
            .expect("present");
        assert_eq!(value.to_str().ok(), Some("Bearer abc.def"));
        assert!(value.is_sensitive());
        assert!(parse_key(String::new()).expect("valid").is_none());
        assert!(matches!(
            parse_key("line\nbreak".into()),
            Err(Error::Config(_))
        ));
    }
}
