//! What the server knows about the connection a request came on. The
//! listener puts a [`ConnInfo`] into every request's extensions; auth and
//! per-client limits read it from there.

use std::net::SocketAddr;

/// The connection a request arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The subject common name of a verified TLS client certificate (mTLS),
    /// if the client presented one.
    pub client_cert_name: Option<String>,
}

impl ConnInfo {
    /// The connection info of a request, if the listener recorded it.
    pub fn of<B>(req: &http::Request<B>) -> Option<&ConnInfo> {
        req.extensions().get::<ConnInfo>()
    }
}
