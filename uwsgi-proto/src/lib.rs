//! The uwsgi wire protocol, as nginx's `uwsgi_pass` and uWSGI speak it.
//!
//! A request is a 4-byte header, a block of `datasize` bytes of vars, then the body:
//!
//! ```text
//! u8 modifier1 | u16 LE datasize | u8 modifier2 | vars | body
//! vars := { u16 LE key_len, key, u16 LE val_len, val }*
//! ```
//!
//! The response is a plain HTTP/1.x response; nothing here frames it.
#![forbid(unsafe_code)]

use thiserror::Error;

/// Length of the fixed packet header.
pub const HEADER_LEN: usize = 4;

/// The largest vars block the 16-bit `datasize` can describe.
pub const MAX_VARS_LEN: usize = u16::MAX as usize;

/// The var a client that can reuse the connection sends (docs/protocol.md), with the
/// value saying it also reads chunked responses: our module sends it with every request,
/// the daemon reads it, and keeps it out of the app's environ.
pub const KEEPALIVE_VAR: &[u8] = b"NGX_WSGI_KEEPALIVE";
pub const KEEPALIVE_CHUNKED: &[u8] = b"chunked";

/// What a client said with [`KEEPALIVE_VAR`] it can do with a kept-alive connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// No var (stock uwsgi): the connection closes after the response.
    Off,
    /// `1`: reuse after a response delimited by Content-Length (or without a body).
    Length,
    /// `chunked`: chunked responses too.
    Chunked,
}

impl KeepAlive {
    /// From the var's value, if the request had it.
    pub fn from_var(value: Option<&[u8]>) -> KeepAlive {
        match value {
            Some(b"1") => KeepAlive::Length,
            Some(KEEPALIVE_CHUNKED) => KeepAlive::Chunked,
            _ => KeepAlive::Off,
        }
    }
}

/// A request header's name as a var's after "HTTP_" (CGI's rule): upper case, '-' as '_'.
pub fn header_var_char(c: u8) -> u8 {
    match c {
        b'-' => b'_',
        c => c.to_ascii_uppercase(),
    }
}

/// Whether two header names make the same HTTP_* var.
pub fn same_header_var(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| header_var_char(x) == header_var_char(y))
}

/// What joins the values of a repeated header in its one var, as nginx 1.23+ joins them:
/// "; " for Cookie, ", " for the others.
pub fn header_separator(name: &[u8]) -> &'static [u8] {
    match same_header_var(name, b"Cookie") {
        true => b"; ",
        false => b", ",
    }
}

/// `modifier1` of a plain WSGI request.
pub const MODIFIER1_WSGI: u8 = 0;

/// The fixed 4-byte header of a uwsgi packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub modifier1: u8,
    pub datasize: u16,
    pub modifier2: u8,
}

/// Why a packet header cannot start a request we serve.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("plain HTTP sent to a uwsgi socket (the request starts with \"{0}\"): point an HTTP client at --http-socket, or nginx's uwsgi_pass/wsgi_pass at this socket")]
    PlainHttp(String),
    #[error(
        "uwsgi vars block of {datasize} bytes exceeds --buffer-size {limit}: raise --buffer-size"
    )]
    TooLarge { datasize: usize, limit: usize },
    #[error("uwsgi modifier1 {0} is not a WSGI request (expected 0 or 30)")]
    UnsupportedModifier(u8),
}

impl PacketHeader {
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Self {
        PacketHeader {
            modifier1: bytes[0],
            datasize: u16::from_le_bytes([bytes[1], bytes[2]]),
            modifier2: bytes[3],
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [lo, hi] = self.datasize.to_le_bytes();
        [self.modifier1, lo, hi, self.modifier2]
    }

    /// Checks that this header starts a WSGI request whose vars fit in `buffer_size`.
    ///
    /// Plain HTTP is recognised before the size check: "GET " read as a header gives a
    /// datasize of 21573, and "vars block too large" would send the user looking in
    /// the wrong place.
    pub fn validate(&self, buffer_size: usize) -> Result<(), HeaderError> {
        let raw = self.encode();
        if let Some(method) = plain_http_method(&raw) {
            return Err(HeaderError::PlainHttp(method));
        }
        // 30 is "SCRIPT_NAME already stripped from PATH_INFO": same environ for us.
        if self.modifier1 != MODIFIER1_WSGI && self.modifier1 != 30 {
            return Err(HeaderError::UnsupportedModifier(self.modifier1));
        }
        let datasize = usize::from(self.datasize);
        if datasize > buffer_size {
            return Err(HeaderError::TooLarge {
                datasize,
                limit: buffer_size,
            });
        }
        Ok(())
    }
}

/// Returns the method-like start of `raw` when those bytes look like an HTTP request line.
fn plain_http_method(raw: &[u8; HEADER_LEN]) -> Option<String> {
    const STARTS: [&[u8; 4]; 10] = [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI", b"CONN", b"TRAC", b"PRI ",
    ];
    STARTS
        .contains(&raw)
        .then(|| String::from_utf8_lossy(raw).into_owned())
}

/// Where the parts of a complete request head lie in a buffer that starts with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub header: PacketHeader,
    /// `buf[vars]` is the vars block.
    pub vars: std::ops::Range<usize>,
    /// Where each var of the block lies, found while the block was checked.
    pub spans: VarSpans,
    /// `CONTENT_LENGTH`, 0 when absent or empty.
    pub content_length: u64,
}

impl RequestHead {
    /// The vars of the head at the start of `buf` (the buffer it was parsed from).
    pub fn vars<'a>(&'a self, buf: &'a [u8]) -> Vars<'a> {
        Vars::new(&buf[self.vars.clone()], &self.spans)
    }
}

/// Where one var of a vars block lies: its name at `start`, then its value after the
/// value's 2-byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarSpan {
    start: u32,
    name_len: u16,
    value_len: u16,
}

/// The vars of a request head: nginx sends a few dozen, which stay inline.
pub type VarSpans = smallvec::SmallVec<[VarSpan; 40]>;

/// A vars block decoded once ([`decode_vars`]): its vars in order, by position, for every
/// reader of the request (the server's own vars, the environ, the log line) without
/// decoding it again.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    block: &'a [u8],
    spans: &'a [VarSpan],
}

impl<'a> Vars<'a> {
    /// The vars of `block`, as [`decode_vars`] found them in it.
    pub fn new(block: &'a [u8], spans: &'a [VarSpan]) -> Self {
        Vars { block, spans }
    }

    /// The vars block as received.
    pub fn block(&self) -> &'a [u8] {
        self.block
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `(name, value)` pairs in order, from the one at position `first`.
    pub fn iter_from(
        &self,
        first: usize,
    ) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let block = self.block;
        self.spans
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(move |span| {
                let name = span.start as usize;
                let value = name + usize::from(span.name_len) + 2;
                (
                    &block[name..name + usize::from(span.name_len)],
                    &block[value..value + usize::from(span.value_len)],
                )
            })
    }

    /// The `(name, value)` pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.iter_from(0)
    }
}

/// Decodes a vars block: where each of its vars lies.
pub fn decode_vars(block: &[u8]) -> Result<VarSpans, VarsError> {
    decode_vars_seeing(block, |_, _| Ok::<_, VarsError>(()))
}

/// Decodes a vars block, showing each var to `see` on the way (one pass for what the
/// caller looks for too).
fn decode_vars_seeing<E: From<VarsError>>(
    block: &[u8],
    mut see: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
) -> Result<VarSpans, E> {
    let mut spans = VarSpans::new();
    for pair in parse_vars(block) {
        let (name, value) = pair?;
        see(name, value)?;
        // Both lengths came from 2-byte fields, and the block is at most 64 KiB.
        spans.push(VarSpan {
            start: (name.as_ptr() as usize - block.as_ptr() as usize) as u32,
            name_len: name.len() as u16,
            value_len: value.len() as u16,
        });
    }
    Ok(spans)
}

/// Why a request head cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeadError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Vars(#[from] VarsError),
    #[error("CONTENT_LENGTH \"{0}\" is not a number")]
    BadContentLength(String),
}

/// Parses the request head at the start of `buf`: `Ok(None)` while more bytes are needed.
///
/// The header is checked as soon as its 4 bytes are in, so an oversized or non-uwsgi
/// request is refused without waiting for the rest.
pub fn parse_request_head(
    buf: &[u8],
    buffer_size: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let Some(raw) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = PacketHeader::parse(*raw);
    header.validate(buffer_size)?;
    let vars = HEADER_LEN..HEADER_LEN + usize::from(header.datasize);
    let Some(block) = buf.get(vars.clone()) else {
        return Ok(None);
    };
    let mut content_length = 0;
    let spans = decode_vars_seeing(block, |key, value| {
        if key == b"CONTENT_LENGTH" && !value.is_empty() {
            content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    HeadError::BadContentLength(String::from_utf8_lossy(value).into_owned())
                })?;
        }
        Ok::<_, HeadError>(())
    })?;
    Ok(Some(RequestHead {
        header,
        vars,
        spans,
        content_length,
    }))
}

/// A vars block that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VarsError {
    #[error(
        "uwsgi vars block truncated: a {what} length at offset {offset} needs 2 bytes, {left} left"
    )]
    TruncatedLength {
        what: &'static str,
        offset: usize,
        left: usize,
    },
    #[error("uwsgi var {what} at offset {offset} is {len} bytes long but only {left} bytes of the vars block are left")]
    Overrun {
        what: &'static str,
        offset: usize,
        len: usize,
        left: usize,
    },
}

/// Iterates over the `(key, value)` pairs of a vars block without copying.
pub fn parse_vars(block: &[u8]) -> VarsIter<'_> {
    VarsIter { block, offset: 0 }
}

/// Iterator returned by [`parse_vars`]; yields an error once and then stops.
pub struct VarsIter<'a> {
    block: &'a [u8],
    offset: usize,
}

impl<'a> VarsIter<'a> {
    #[inline]
    fn take(&mut self, what: &'static str) -> Result<&'a [u8], VarsError> {
        let left = self.block.len() - self.offset;
        if left < 2 {
            return Err(VarsError::TruncatedLength {
                what,
                offset: self.offset,
                left,
            });
        }
        let len_bytes = [self.block[self.offset], self.block[self.offset + 1]];
        let len = usize::from(u16::from_le_bytes(len_bytes));
        let start = self.offset + 2;
        let left = self.block.len() - start;
        if len > left {
            return Err(VarsError::Overrun {
                what,
                offset: self.offset,
                len,
                left,
            });
        }
        self.offset = start + len;
        Ok(&self.block[start..start + len])
    }
}

impl<'a> Iterator for VarsIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), VarsError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.block.len() {
            return None;
        }
        let pair = self
            .take("key")
            .and_then(|key| Ok((key, self.take("value")?)));
        if pair.is_err() {
            // Stop after the first error: what follows is not aligned on a pair.
            self.offset = self.block.len();
        }
        Some(pair)
    }
}

/// Why a set of vars cannot be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("uwsgi var \"{0}\" is longer than 65535 bytes")]
    FieldTooLong(String),
    #[error("uwsgi request vars are {0} bytes, over the protocol's 65535-byte limit")]
    PacketTooLarge(usize),
}

/// The encoded length of a vars block holding `pairs`.
pub fn vars_len<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    pairs.into_iter().map(|(k, v)| 4 + k.len() + v.len()).sum()
}

/// Encodes a complete request header and vars block (no body).
pub fn encode_request<'a>(
    modifier1: u8,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Result<Vec<u8>, EncodeError> {
    let datasize = vars_len(pairs.clone());
    if datasize > MAX_VARS_LEN {
        return Err(EncodeError::PacketTooLarge(datasize));
    }
    let mut packet = Vec::with_capacity(HEADER_LEN + datasize);
    let header = PacketHeader {
        modifier1,
        datasize: datasize as u16,
        modifier2: 0,
    };
    packet.extend_from_slice(&header.encode());
    for (key, value) in pairs {
        for field in [key, value] {
            let len = u16::try_from(field.len()).map_err(|_| {
                EncodeError::FieldTooLong(String::from_utf8_lossy(key).into_owned())
            })?;
            packet.extend_from_slice(&len.to_le_bytes());
            packet.extend_from_slice(field);
        }
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_make_the_same_var_whatever_their_case_and_dashes() {
        assert!(same_header_var(b"X-Many", b"x-many"));
        assert!(same_header_var(b"X_FORWARDED_FOR", b"X-Forwarded-For"));
        assert!(!same_header_var(b"X-Many", b"X-Manz"));
        assert!(!same_header_var(b"Accept", b"Accept-Encoding"));
        assert_eq!(header_separator(b"cookie"), b"; ");
        assert_eq!(header_separator(b"Accept"), b", ");
    }

    #[test]
    fn the_keepalive_var_says_what_the_client_can_read() {
        assert_eq!(KeepAlive::from_var(None), KeepAlive::Off);
        assert_eq!(KeepAlive::from_var(Some(b"1")), KeepAlive::Length);
        assert_eq!(
            KeepAlive::from_var(Some(KEEPALIVE_CHUNKED)),
            KeepAlive::Chunked
        );
        assert_eq!(KeepAlive::from_var(Some(b"yes")), KeepAlive::Off);
    }

    fn sample() -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", b"/caf\xe9"),
            (b"QUERY_STRING", b""),
        ]
    }

    #[test]
    fn round_trip() {
        let packet = encode_request(0, sample()).unwrap();
        let header = PacketHeader::parse(packet[..4].try_into().unwrap());
        assert_eq!(usize::from(header.datasize), packet.len() - 4);
        assert_eq!(header.modifier1, 0);
        let vars: Vec<_> = parse_vars(&packet[4..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(vars, sample());
    }

    #[test]
    fn header_is_little_endian() {
        let header = PacketHeader::parse([0, 0x34, 0x12, 7]);
        assert_eq!(header.datasize, 0x1234);
        assert_eq!(header.modifier2, 7);
        assert_eq!(header.encode(), [0, 0x34, 0x12, 7]);
    }

    #[test]
    fn plain_http_is_named() {
        let err = PacketHeader::parse(*b"GET ").validate(65535).unwrap_err();
        assert_eq!(err, HeaderError::PlainHttp("GET ".into()));
        assert!(err
            .to_string()
            .contains("plain HTTP sent to a uwsgi socket"));
        // Even with a small buffer, plain HTTP is reported as such, not as a size error.
        let err = PacketHeader::parse(*b"POST").validate(4096).unwrap_err();
        assert!(matches!(err, HeaderError::PlainHttp(_)));
    }

    #[test]
    fn oversized_vars_block_is_refused() {
        let header = PacketHeader {
            modifier1: 0,
            datasize: 5000,
            modifier2: 0,
        };
        assert_eq!(
            header.validate(4096),
            Err(HeaderError::TooLarge {
                datasize: 5000,
                limit: 4096
            })
        );
        assert!(header.validate(65535).is_ok());
    }

    #[test]
    fn foreign_modifier_is_refused() {
        let header = PacketHeader {
            modifier1: 5,
            datasize: 10,
            modifier2: 0,
        };
        assert_eq!(
            header.validate(65535),
            Err(HeaderError::UnsupportedModifier(5))
        );
        let header = PacketHeader {
            modifier1: 30,
            datasize: 10,
            modifier2: 0,
        };
        assert!(header.validate(65535).is_ok());
    }

    #[test]
    fn truncated_length_is_an_error() {
        let mut packet = encode_request(0, sample()).unwrap();
        packet.push(3); // a lone byte where a key length should be
        let last = parse_vars(&packet[4..]).last().unwrap();
        assert!(matches!(
            last,
            Err(VarsError::TruncatedLength {
                what: "key",
                left: 1,
                ..
            })
        ));
    }

    #[test]
    fn value_overrunning_the_block_is_an_error() {
        // key "A", then a value length of 10 with only 2 bytes present
        let block = [1, 0, b'A', 10, 0, b'x', b'y'];
        let result: Vec<_> = parse_vars(&block).collect();
        assert_eq!(
            result,
            vec![Err(VarsError::Overrun {
                what: "value",
                offset: 3,
                len: 10,
                left: 2
            })]
        );
    }

    #[test]
    fn request_head_needs_every_byte_of_the_vars() {
        let mut packet = encode_request(0, sample()).unwrap();
        for len in 0..packet.len() {
            assert_eq!(
                parse_request_head(&packet[..len], 65535),
                Ok(None),
                "at {len} bytes"
            );
        }
        packet.extend_from_slice(b"body bytes");
        let head = parse_request_head(&packet, 65535).unwrap().unwrap();
        assert_eq!(head.vars, 4..packet.len() - 10);
        assert_eq!(head.content_length, 0);
    }

    #[test]
    fn request_head_reads_content_length() {
        let packet = encode_request(0, vec![(&b"CONTENT_LENGTH"[..], &b"42"[..])]).unwrap();
        assert_eq!(
            parse_request_head(&packet, 65535)
                .unwrap()
                .unwrap()
                .content_length,
            42
        );
        let packet = encode_request(0, vec![(&b"CONTENT_LENGTH"[..], &b""[..])]).unwrap();
        assert_eq!(
            parse_request_head(&packet, 65535)
                .unwrap()
                .unwrap()
                .content_length,
            0
        );
        let packet = encode_request(0, vec![(&b"CONTENT_LENGTH"[..], &b"-1"[..])]).unwrap();
        assert_eq!(
            parse_request_head(&packet, 65535),
            Err(HeadError::BadContentLength("-1".into()))
        );
    }

    #[test]
    fn request_head_refuses_a_bad_header_before_the_vars_arrive() {
        assert!(matches!(
            parse_request_head(b"GET ", 65535),
            Err(HeadError::Header(HeaderError::PlainHttp(_)))
        ));
        let header = PacketHeader {
            modifier1: 0,
            datasize: 9000,
            modifier2: 0,
        }
        .encode();
        assert!(matches!(
            parse_request_head(&header, 4096),
            Err(HeadError::Header(HeaderError::TooLarge { .. }))
        ));
    }

    #[test]
    fn empty_block_has_no_vars() {
        assert_eq!(parse_vars(&[]).count(), 0);
    }

    #[test]
    fn oversized_packet_is_refused_when_encoding() {
        let big = vec![b'x'; 40000];
        let pairs = vec![(&b"A"[..], &big[..]), (&b"B"[..], &big[..])];
        assert_eq!(
            encode_request(0, pairs),
            Err(EncodeError::PacketTooLarge(80010))
        );
    }

    #[test]
    fn vars_len_counts_length_prefixes() {
        assert_eq!(vars_len(sample()), 4 * 3 + 14 + 3 + 9 + 5 + 12);
    }
}
