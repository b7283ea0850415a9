//! Hostile answers to log requests: for the client's body cap, a gzip bomb (a small
//! `Content-Encoding: gzip` body that decodes to gigabytes) and a very large page, both
//! generated while they are sent so the emulator itself stays small; for the page
//! parser, a fixed body of the test's choosing sent with status 200.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::response::Response;
use flate2::{Compress, Compression, Crc, FlushCompress};

pub(super) const GZIP_BOMB: &str = "gzip_bomb";
pub(super) const HUGE_BODY: &str = "huge_body";
pub(super) const FIXED_BODY: &str = "fixed_body";

const MIB: usize = 1024 * 1024;

/// A hostile answer served instead of every 200 page (never to `/v1/oauth-token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// A gzip body of about 1 KB per MiB that decodes to `decoded_mib` MiB of JSON
    /// whitespace.
    GzipBomb { decoded_mib: u64 },
    /// A page of about `bytes` bytes of valid JSON, sent in 64 KiB chunks; with
    /// `announce_length` the exact `Content-Length` is sent first.
    Huge { bytes: u64, announce_length: bool },
    /// Exactly this text as the body (say a page with a non-object item, or Miro's
    /// error JSON), with the status and headers of the page it replaces.
    Fixed(&'static str),
}

impl BodyFault {
    pub(super) fn name(self) -> &'static str {
        match self {
            BodyFault::GzipBomb { .. } => GZIP_BOMB,
            BodyFault::Huge { .. } => HUGE_BODY,
            BodyFault::Fixed(_) => FIXED_BODY,
        }
    }

    /// Replaces the body of `response` (status and rate headers stay).
    pub(super) fn apply(self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.remove(CONTENT_LENGTH);
        let chunks: Box<dyn Iterator<Item = Bytes> + Send> = match self {
            BodyFault::GzipBomb { decoded_mib } => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                Box::new(gzip_bomb(decoded_mib))
            }
            BodyFault::Huge {
                bytes,
                announce_length,
            } => {
                let (length, chunks) = huge_page(bytes);
                if announce_length {
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
                }
                Box::new(chunks)
            }
            BodyFault::Fixed(text) => {
                Box::new(std::iter::once(Bytes::from_static(text.as_bytes())))
            }
        };
        let stream = futures_util::stream::iter(chunks.map(Ok::<Bytes, Infallible>));
        *response.body_mut() = Body::from_stream(stream);
    }
}

/// A gzip member whose deflate data is one self-contained, byte-aligned segment (1 MiB
/// of spaces) repeated `decoded_mib` times, then an empty final block and the trailer.
pub(crate) fn gzip_bomb(decoded_mib: u64) -> impl Iterator<Item = Bytes> + Send {
    let spaces = vec![b' '; MIB];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut segment = Vec::with_capacity(8 * 1024);
    deflate
        .compress_vec(&spaces, &mut segment, FlushCompress::Full)
        .expect("deflate into a large enough buffer");
    assert_eq!(deflate.total_in(), MIB as u64, "whole MiB compressed");
    let segment = Bytes::from(segment);
    let mut unit_crc = Crc::new();
    unit_crc.update(&spaces);
    let mut crc = Crc::new();
    for _ in 0..decoded_mib {
        crc.combine(&unit_crc);
    }
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut tail = vec![0x01, 0x00, 0x00, 0xff, 0xff];
    tail.extend_from_slice(&crc.sum().to_le_bytes());
    tail.extend_from_slice(&(crc.amount()).to_le_bytes());
    std::iter::once(header)
        .chain(std::iter::repeat_n(
            segment,
            usize::try_from(decoded_mib).unwrap_or(usize::MAX),
        ))
        .chain(std::iter::once(Bytes::from(tail)))
}

/// A valid page of about `bytes` bytes: its exact length and its chunks.
fn huge_page(bytes: u64) -> (u64, impl Iterator<Item = Bytes> + Send) {
    const HEAD: &str = r#"{"type":"cursor-list","limit":100,"data":["#;
    const LAST: &str = r#"{"id":"huge-last","event":"board_opened"}]}"#;
    let item = format!(
        r#"{{"id":"huge","event":"board_opened","details":{{"pad":"{}"}}}},"#,
        "x".repeat(1000)
    );
    let per_chunk = (64 * 1024 / item.len()).max(1);
    let chunk = Bytes::from(item.repeat(per_chunk));
    let fixed = (HEAD.len() + LAST.len()) as u64;
    let chunks = bytes.saturating_sub(fixed) / chunk.len() as u64;
    let length = fixed + chunks * chunk.len() as u64;
    let iter = std::iter::once(Bytes::from_static(HEAD.as_bytes()))
        .chain(std::iter::repeat_n(
            chunk,
            usize::try_from(chunks).unwrap_or(usize::MAX),
        ))
        .chain(std::iter::once(Bytes::from_static(LAST.as_bytes())));
    (length, iter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_bomb_is_small_and_a_valid_gzip_of_the_announced_size() {
        let compressed: Vec<u8> = gzip_bomb(3).flat_map(|b| b.to_vec()).collect();
        assert!(compressed.len() < 3 * 8 * 1024, "{}", compressed.len());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .expect("a valid gzip member (crc and size checked)");
        assert_eq!(decoded.len(), 3 * MIB);
        assert!(decoded.iter().all(|&b| b == b' '));
    }

    #[test]
    fn huge_page_is_valid_json_of_the_announced_length() {
        let (length, chunks) = huge_page(300_000);
        let body: Vec<u8> = chunks.flat_map(|b| b.to_vec()).collect();
        assert_eq!(body.len() as u64, length);
        assert!(length > 200_000 && length <= 300_000, "{length}");
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(page["data"].as_array().unwrap().len() > 100);
    }
}
