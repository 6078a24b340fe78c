//! Connections: what the server knows of the connection a call came on.
//!
//! Every accepted connection carries a [`ConnInfo`] that tonic puts in each request's
//! extensions (wrapped in `TlsConnectInfo` under TLS); [`peer_ip`] reads the client's address
//! from it for the per-address rate limit and the refusal summaries.

use std::net::{IpAddr, SocketAddr};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What a call's request knows of its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The server's address the client reached.
    pub local_addr: Option<SocketAddr>,
}

/// The client address of a request, if the transport knows it.
pub fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let ext = request.extensions();
    ext.get::<ConnInfo>()
        .and_then(|c| c.remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<ConnInfo>>()
                .and_then(|c| c.get_ref().remote_addr)
        })
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|c| c.remote_addr()))
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|c| c.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}
