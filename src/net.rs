//! What every HTTP exchange of mirotrail shares: where a secret may be sent, and how much
//! of an answer is read.
//!
//! Invariants: a bearer token or client secret only travels over https, or over plain
//! http to a loopback address (`secure_url`); no response body is held beyond its cap,
//! compressed or not (`read_body_capped` reads the decoded body chunk by chunk and stops
//! as soon as the cap is passed), so a hostile or broken server cannot exhaust memory.

use url::{Host, Url};

/// The `User-Agent` of every request mirotrail sends (Miro and Azure).
pub const USER_AGENT: &str = concat!("mirotrail/", env!("CARGO_PKG_VERSION"));

/// An error followed by each of its causes, `: `-separated (reqwest's own message names
/// only the outermost layer).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The innermost cause of an error (the one that says what happened), if it has one.
pub fn root_cause<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let mut root = None;
    let mut source = e.source();
    while let Some(s) = source {
        root = Some(s);
        source = s.source();
    }
    root
}

/// Bytes of a token endpoint's or an Azure error answer mirotrail reads at most. Entra
/// tokens are a few KB and Azure error bodies under 10 KB; 1 MiB leaves room for any
/// proxy page while bounding memory.
pub const MAX_AUXILIARY_BODY_BYTES: usize = 1024 * 1024;

/// A body that could not be read in full.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body (after gzip decoding) is longer than the cap.
    #[error("the answer is larger than {max_bytes} bytes{declared}", declared = declared_text(*.declared))]
    TooLarge {
        max_bytes: usize,
        /// The length the server announced, when it announced one.
        declared: Option<u64>,
    },
    /// The connection broke off or the body could not be decoded.
    #[error("the answer broke off")]
    Transport(#[source] reqwest::Error),
}

fn declared_text(declared: Option<u64>) -> String {
    declared
        .map(|n| format!(" (it announced {n} bytes)"))
        .unwrap_or_default()
}

/// Reads a response body of at most `max_bytes` bytes (counted after gzip decoding).
/// Refuses at once when the announced length is over the cap; otherwise reads chunk by
/// chunk and drops the connection as soon as the cap is passed.
pub async fn read_body_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, BodyError> {
    if let Some(declared) = response.content_length()
        && declared > max_bytes as u64
    {
        return Err(BodyError::TooLarge {
            max_bytes,
            declared: Some(declared),
        });
    }
    // The declared length (at most `max_bytes`, checked above) is reserved at once, so a
    // large page is not copied again each time the buffer would have doubled.
    let declared = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(declared);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(BodyError::TooLarge {
                max_bytes,
                declared: None,
            });
        }
        if body.len() + chunk.len() > body.capacity() && body.len() >= GROW_TO_CAP_PAST {
            // Past this size the buffer is grown to the cap in one step: doubling would
            // leave every smaller buffer it outgrew to the allocator, which may keep their
            // pages for a moment (jemalloc's decay), and a body near the cap would then
            // cost twice the cap. Pages of the reserve are only resident once written.
            // Where the reserve cannot be had, growth falls back to doubling.
            let _ = body.try_reserve_exact(max_bytes - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The size past which an unannounced body's buffer is grown to the cap at once (see
/// `read_body_capped`): about two full audit pages.
const GROW_TO_CAP_PAST: usize = 1 << 20;

/// True for the loopback host names: `localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An http(s) URL with a host.
pub fn http_url(text: &str) -> Result<Url, String> {
    Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| format!("`{text}` is not an http(s) URL"))
}

/// A URL a secret may be sent to: https, or http to a loopback address (emulators,
/// local proxies). The error says what to change.
pub fn secure_url(text: &str) -> Result<Url, String> {
    let url = http_url(text)?;
    if url.scheme() == "https" || is_loopback(&url) {
        Ok(url)
    } else {
        Err(format!(
            "`{text}` must be an https URL: a secret is sent to it, and plain http is \
             accepted for loopback addresses only (127.0.0.0/8, ::1, localhost); write \
             https://"
        ))
    }
}

/// `builder` with the credential header `name: value` marked sensitive, so the HTTP
/// layer never shows it in logs or `Debug` output (as `bearer_auth` does for Sentinel).
/// A value that is not a valid header (a newline in a token) is left to the builder,
/// which reports it when the request is sent.
pub fn credential_header(
    builder: reqwest::RequestBuilder,
    name: reqwest::header::HeaderName,
    value: &str,
) -> reqwest::RequestBuilder {
    match reqwest::header::HeaderValue::from_str(value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            builder.header(name, v)
        }
        Err(_) => builder.header(name, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_over_https_or_to_loopback_only() {
        for ok in [
            "https://api.miro.com",
            "https://example.com:8443/x",
            "http://127.0.0.1:9",
            "http://127.1.2.3/",
            "http://localhost:80",
            "http://LOCALHOST",
            "http://[::1]:8080/",
        ] {
            assert!(secure_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.example.com",
            "http://10.0.0.1:80",
            "http://128.0.0.1",
            "http://localhost.example.com",
            "http://[::2]/",
        ] {
            let e = secure_url(bad).unwrap_err();
            assert!(e.contains("https") && e.contains("loopback"), "{bad}: {e}");
        }
        assert!(
            secure_url("ftp://x")
                .unwrap_err()
                .contains("not an http(s) URL")
        );
    }
}
