//! A minimal `IMDSv2` client: one PUT for a session token, then GETs that present it.
//!
//! Every request is one attempt on its own connection, with a 1 s connect timeout and a 2 s
//! limit for the whole exchange, so off EC2 (where 169.254.169.254 does not answer) the agent
//! learns it within about a second and the caller decides when to try again. Proxy settings
//! are never consulted: IMDS is link-local and must not be reached through anything else.

use std::{io, pin::pin, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, Uri, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::timeout};

use super::{AwsError, InstanceIdentity, TrustedCerts, verify};

const TOKEN_PATH: &str = "/latest/api/token";
const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
const SIGNATURE_PATH: &str = "/latest/dynamic/instance-identity/rsa2048";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The longest token lifetime IMDS grants, in seconds.
const TOKEN_TTL_SECONDS: &str = "21600";
/// Identity documents are under 1 KiB and signatures about 2 KiB.
const MAX_BODY: usize = 64 * 1024;

/// Where and how to reach the instance metadata service.
#[derive(Clone, Debug)]
pub struct Imds {
    /// `http://host[:port]`, without a trailing `/`.
    base: String,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    authority: String,
}

impl Default for Imds {
    fn default() -> Self {
        Self {
            base: Self::DEFAULT_BASE.to_owned(),
            addr: "169.254.169.254:80".to_owned(),
            authority: "169.254.169.254".to_owned(),
        }
    }
}

impl Imds {
    /// The IPv4 IMDS endpoint every EC2 instance has.
    pub const DEFAULT_BASE: &str = "http://169.254.169.254";
    /// How long to wait for the TCP connection.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// How long one request may take once connected, answer included.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

    /// A client for the IMDS at `base`, an `http://host[:port]` URL (a test server, or the
    /// IPv6 endpoint `http://[fd00:ec2::254]`).
    ///
    /// # Errors
    /// [`AwsError::BaseUrl`] if `base` is not a plain `http://` URL without path or query.
    pub fn new(base: &str) -> Result<Self, AwsError> {
        let invalid = |reason: &str| AwsError::BaseUrl {
            base: base.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("IMDS is plain http://"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("give only http://host[:port], the paths are fixed"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        Ok(Self {
            base: format!("http://{authority}"),
            addr: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
            authority: authority.as_str().to_owned(),
        })
    }

    /// The base URL requests go to.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Fetches a session token, then the identity document and its `rsa2048` signature.
    /// Nothing here is trusted yet: pass both to [`verify`].
    ///
    /// # Errors
    /// [`AwsError::Unreachable`], [`AwsError::Http`] or [`AwsError::Response`] for the first
    /// request that fails; no request is retried.
    pub async fn document_and_signature(&self) -> Result<(Vec<u8>, String), AwsError> {
        let token = self
            .request(Method::PUT, TOKEN_PATH, TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)
            .await?;
        let token = String::from_utf8(token)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| AwsError::Response {
                url: self.url(TOKEN_PATH),
                reason: "the session token is not a non-empty printable ASCII string".into(),
            })?;
        let document = self.request(Method::GET, DOCUMENT_PATH, TOKEN_HEADER, &token).await?;
        let signature = self.request(Method::GET, SIGNATURE_PATH, TOKEN_HEADER, &token).await?;
        let signature = String::from_utf8(signature).map_err(|_| AwsError::Response {
            url: self.url(SIGNATURE_PATH),
            reason: "the signature is not text".into(),
        })?;
        Ok((document, signature))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One request with one header, on a fresh connection; the body of a 2xx answer.
    async fn request(&self, method: Method, path: &str, name: &str, value: &str) -> Result<Vec<u8>, AwsError> {
        let url = self.url(path);
        let unreachable = |source: io::Error| AwsError::Unreachable {
            url: url.clone(),
            source,
        };
        let stream = timeout(Self::CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                unreachable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", Self::CONNECT_TIMEOUT),
                ))
            })?
            .map_err(unreachable)?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(name, value)
            .body(Empty::<Bytes>::new())
            .map_err(|e| AwsError::Response {
                url: url.clone(),
                reason: format!("cannot build the request: {e}"),
            })?;
        let exchange = async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
            let mut connection = pin!(connection);
            let mut answer = pin!(async {
                let response = sender.send_request(request).await.map_err(io::Error::other)?;
                let status = response.status();
                let mut body = response.into_body();
                let mut bytes = Vec::new();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                        bytes.extend_from_slice(&data);
                        if bytes.len() > MAX_BODY {
                            return Ok(Err(format!("answer larger than {MAX_BODY} bytes")));
                        }
                    }
                }
                Ok::<_, io::Error>(Ok((status, bytes)))
            });
            // The connection must be driven while the answer is read; if it ends first, what
            // it delivered is already buffered in the body.
            tokio::select! {
                answer = &mut answer => answer,
                ended = &mut connection => {
                    ended.map_err(io::Error::other)?;
                    answer.await
                }
            }
        };
        let (status, body) = timeout(Self::REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                unreachable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete answer within {:?}", Self::REQUEST_TIMEOUT),
                ))
            })?
            .map_err(unreachable)?
            .map_err(|reason| AwsError::Response {
                url: url.clone(),
                reason,
            })?;
        if !status.is_success() {
            return Err(AwsError::Http {
                url,
                status: status.as_u16(),
            });
        }
        Ok(body)
    }
}

/// Fetches the identity document and its signature from `imds` and verifies them.
///
/// # Errors
/// Any [`AwsError`]: the fetch errors of [`Imds::document_and_signature`] or the verification
/// errors of [`verify`].
pub async fn fetch_identity(imds: &Imds, certs: &TrustedCerts) -> Result<InstanceIdentity, AwsError> {
    let (document, signature) = imds.document_and_signature().await?;
    verify(&document, &signature, certs)
}

#[cfg(test)]
mod tests {
    use super::Imds;

    #[test]
    fn connect_address_and_host_header() {
        for (base, addr, authority) in [
            ("http://169.254.169.254", "169.254.169.254:80", "169.254.169.254"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://[fd00:ec2::254]", "[fd00:ec2::254]:80", "[fd00:ec2::254]"),
        ] {
            let imds = Imds::new(base).expect("valid base URL");
            assert_eq!(
                (imds.addr.as_str(), imds.authority.as_str()),
                (addr, authority),
                "{base}"
            );
        }
        let default = Imds::default();
        let parsed = Imds::new(Imds::DEFAULT_BASE).expect("default base URL");
        assert_eq!(
            (default.base, default.addr, default.authority),
            (parsed.base, parsed.addr, parsed.authority)
        );
    }
}
