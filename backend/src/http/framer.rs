//! Where the requests of a connection begin and end in the bytes hyper reads, told apart
//! without hyper: the gate (`gate.rs`) must know whether hyper holds bytes of a request
//! it did not admit (a pipelining client's), because such a connection cannot move to
//! another thread, whose hyper would get that request without its first bytes.

/// The longest request head followed: past it the boundaries are no longer known.
const MAX_HEAD: usize = 64 * 1024;

/// A connection's byte stream, as request heads, bodies, and the starts of the next.
#[derive(Debug, Default)]
pub struct Framer {
    state: State,
    /// The head being read, up to [`MAX_HEAD`] bytes.
    head: Vec<u8>,
    /// Requests whose first byte has come.
    started: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    /// Between requests, or in a head (its bytes in `head`).
    #[default]
    Head,
    /// In a body delimited by its length: the bytes left.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Lost track (a head too long, a length that is not a number): hyper answers such a
    /// request with an error and closes, or the connection is kept where it is.
    Unknown,
}

/// Where a chunked body is.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// The size line: the size so far, and whether an extension (`;...`) began.
    Size { size: u64, extension: bool },
    /// The chunk's data: the bytes left.
    Data(u64),
    /// The CRLF after the data: the bytes left.
    DataEnd(u8),
    /// The trailer section: the length of the current line.
    Trailers(usize),
}

impl Framer {
    /// How many requests have begun in the bytes seen; `None` once the boundaries are
    /// unknown.
    pub fn started(&self) -> Option<u64> {
        (self.state != State::Unknown).then_some(self.started)
    }

    /// Whether `requests` requests have begun and the stream is between two of them:
    /// where an admission read must start.
    pub fn between(&self, requests: u64) -> bool {
        self.state == State::Head && self.head.is_empty() && self.started == requests
    }

    /// Follows `bytes`, the next ones hyper read.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Unknown => return,
                State::Head => self.feed_head(bytes),
                State::Body(ref mut left) => {
                    let taken = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= taken as u64;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                    &bytes[taken..]
                }
                State::Chunked(ref mut chunk) => {
                    let (taken, done) = chunk.feed(bytes);
                    if done {
                        self.state = State::Head;
                    }
                    &bytes[taken..]
                }
            };
        }
    }

    fn feed_head<'b>(&mut self, mut bytes: &'b [u8]) -> &'b [u8] {
        if self.head.is_empty() {
            // Empty lines before a request line are allowed (RFC 9112, 2.2).
            let skipped = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            bytes = &bytes[skipped..];
            if bytes.is_empty() {
                return bytes;
            }
            self.started += 1;
            // Nearly always: the whole head in one read, followed where it is.
            if let Some(end) = head_end(bytes, 0) {
                self.state = body_of(&bytes[..end]);
                return &bytes[end..];
            }
        }
        // A head across reads: kept until its blank line (which may straddle them).
        let before = self.head.len();
        let taken = bytes.len().min(MAX_HEAD.saturating_sub(before));
        self.head.extend_from_slice(&bytes[..taken]);
        match head_end(&self.head, before.saturating_sub(3)) {
            Some(end) => {
                self.state = body_of(&self.head[..end]);
                self.head.clear();
                &bytes[end - before..]
            }
            None => {
                if self.head.len() >= MAX_HEAD {
                    self.state = State::Unknown;
                }
                &[]
            }
        }
    }
}

/// Where a head ends in `bytes`, looking from `from`: after its blank line, which as
/// httparse reads it is CRLF or LF after a line's LF (CRLF CRLF, LF LF, LF CRLF).
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = bytes.get(at..)?.iter().position(|b| *b == b'\n') {
        let lf = at + i;
        if (lf >= 1 && bytes[lf - 1] == b'\n') || (lf >= 2 && &bytes[lf - 2..lf] == b"\n\r") {
            return Some(lf + 1);
        }
        at = lf + 1;
    }
    None
}

/// What follows a request head: its body's framing, as RFC 9112 6.3 says (a request
/// without Content-Length or Transfer-Encoding has none).
fn body_of(head: &[u8]) -> State {
    let mut length = None;
    let mut chunked = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                return State::Unknown;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return State::Unknown,
            }
        }
    }
    match (chunked, length) {
        (true, _) => State::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        }),
        (false, Some(n)) if n > 0 => State::Body(n),
        _ => State::Head,
    }
}

impl Chunk {
    /// Follows bytes of a chunked body: how many it took, and whether the body ended.
    fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut taken = 0;
        while taken < bytes.len() {
            match self {
                Chunk::Data(left) => {
                    let n = (bytes.len() - taken).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    taken += n;
                    if *left == 0 {
                        *self = Chunk::DataEnd(2);
                    }
                    continue;
                }
                Chunk::DataEnd(left) => {
                    *left -= 1;
                    if *left == 0 {
                        *self = Chunk::Size {
                            size: 0,
                            extension: false,
                        };
                    }
                }
                Chunk::Size { size, extension } => match bytes[taken] {
                    b'\n' if *size == 0 => *self = Chunk::Trailers(0),
                    b'\n' => *self = Chunk::Data(*size),
                    b';' => *extension = true,
                    byte if !*extension => {
                        if let Some(digit) = (byte as char).to_digit(16) {
                            *size = size.saturating_mul(16).saturating_add(u64::from(digit));
                        }
                    }
                    _ => {}
                },
                Chunk::Trailers(line) => match bytes[taken] {
                    b'\n' if *line == 0 => return (taken + 1, true),
                    b'\n' => *line = 0,
                    b'\r' => {}
                    _ => *line += 1,
                },
            }
            taken += 1;
        }
        (taken, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests begun after feeding `stream` cut at every place in `cuts`.
    fn started(stream: &[u8], cuts: &[usize]) -> Option<u64> {
        let mut framer = Framer::default();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            framer.feed(&stream[from..cut]);
            from = cut;
        }
        framer.started()
    }

    #[test]
    fn requests_are_counted_wherever_the_reads_cut_them() {
        let stream: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /\
            POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            3;x=1\r\nGET\r\n0\r\nTrailer: t\r\n\r\n\
            GET /c HTTP/1.1\r\n\r\n\r\nGE";
        // Every split in two, and one byte at a time: the same five requests begun (the
        // body "GET /" and the chunk "GET" are not requests).
        for cut in 0..=stream.len() {
            assert_eq!(started(stream, &[cut]), Some(5), "cut at {cut}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(started(stream, &every), Some(5));
        // Only the whole first request: one; its blank line cut in two: one.
        assert_eq!(started(&stream[..27], &[25]), Some(1));
        assert_eq!(
            started(b"\r\n\r\n", &[]),
            Some(0),
            "empty lines begin nothing"
        );
        // Line ends as httparse takes them: LF, and a blank CRLF after an LF.
        let mixed: &[u8] =
            b"GET /a HTTP/1.1\nHost: x\n\r\nGET /b HTTP/1.1\n\r\nGET /c HTTP/1.1\r\nHo";
        for cut in 0..=mixed.len() {
            assert_eq!(started(mixed, &[cut]), Some(3), "cut at {cut}");
        }
    }

    #[test]
    fn a_head_without_a_known_framing_loses_track() {
        assert_eq!(
            started(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", &[]),
            None
        );
        assert_eq!(
            started(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &[]
            ),
            None
        );
        assert_eq!(
            started(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &[]),
            None
        );
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(started(&long, &[]), None);
    }
}
