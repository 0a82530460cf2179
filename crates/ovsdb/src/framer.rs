//! Splits a byte stream into concatenated JSON values (RFC 7047 §2: JSON-RPC over a stream
//! has no other framing). The splitter tracks nesting depth and strings (with escapes), so
//! messages may be split or joined arbitrarily by the transport and need no newlines.

/// A stream that cannot be framed; the connection must be dropped after this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message exceeds the maximum size of {max} bytes")]
    TooLarge { max: usize },
    #[error(
        "unexpected byte 0x{byte:02x} between JSON messages (a message must be an object or array)"
    )]
    Garbage { byte: u8 },
    #[error("JSON nesting deeper than {0}")]
    TooDeep(usize),
}

/// Default bound on one message (a full initial monitor reply of a big NB db is tens of MB).
pub const DEFAULT_MAX_MESSAGE: usize = 512 * 1024 * 1024;
const MAX_DEPTH: usize = 1024;

/// Incremental splitter. Feed bytes with [`Framer::extend`], take complete messages with
/// [`Framer::next_frame`].
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Start of the current (incomplete) message in `buf`, if one has begun.
    start: Option<usize>,
    /// Next byte of `buf` to scan.
    pos: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    max: usize,
}

impl Framer {
    pub fn new(max_message: usize) -> Framer {
        Framer {
            buf: Vec::with_capacity(64 * 1024),
            start: None,
            pos: 0,
            depth: 0,
            in_string: false,
            escape: false,
            max: max_message,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start.unwrap_or(self.pos)
    }

    /// The spare buffer to read into directly (avoids a copy); call [`Framer::commit`] with
    /// the number of bytes written.
    pub fn read_buf(&mut self, want: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        &mut self.buf[len..]
    }

    /// Keeps `n` bytes of the last [`Framer::read_buf`] and drops the rest of it.
    pub fn commit(&mut self, n: usize, want: usize) {
        let keep = self.buf.len() - want + n.min(want);
        self.buf.truncate(keep);
    }

    fn compact(&mut self) {
        let from = self.start.unwrap_or(self.pos);
        if from > 0 && (from >= self.buf.len() / 2 || from > 1 << 20) {
            self.buf.drain(..from);
            self.pos -= from;
            if let Some(s) = self.start.as_mut() {
                *s -= from;
            }
        }
    }

    /// Returns the next complete JSON message, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let buf = &self.buf;
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            if self.start.is_none() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        i += 1;
                        continue;
                    }
                    b'{' | b'[' => {
                        self.start = Some(i);
                        self.depth = 1;
                        i += 1;
                        continue;
                    }
                    _ => return Err(FrameError::Garbage { byte: b }),
                }
            }
            if self.in_string {
                // Fast skip to the next quote or backslash.
                if self.escape {
                    self.escape = false;
                    i += 1;
                    continue;
                }
                match buf[i..].iter().position(|&c| c == b'"' || c == b'\\') {
                    None => {
                        i = buf.len();
                        break;
                    }
                    Some(off) => {
                        i += off;
                        if buf[i] == b'\\' {
                            self.escape = true;
                        } else {
                            self.in_string = false;
                        }
                        i += 1;
                        continue;
                    }
                }
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(FrameError::TooDeep(MAX_DEPTH));
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let start = self.start.take().unwrap_or(0);
                        let end = i + 1;
                        if end - start > self.max {
                            return Err(FrameError::TooLarge { max: self.max });
                        }
                        if start == 0 && end == self.buf.len() {
                            // The buffer is exactly one message (typical for big replies):
                            // hand it over instead of copying it, and start a small one.
                            let mut frame =
                                std::mem::replace(&mut self.buf, Vec::with_capacity(64 * 1024));
                            frame.truncate(end);
                            self.pos = 0;
                            return Ok(Some(frame));
                        }
                        let frame = self.buf[start..end].to_vec();
                        self.pos = end;
                        if self.pos == self.buf.len() {
                            self.buf.clear();
                            self.pos = 0;
                            // Do not keep a huge buffer around after a huge message.
                            if self.buf.capacity() > 4 << 20 {
                                self.buf = Vec::with_capacity(64 * 1024);
                            }
                        }
                        return Ok(Some(frame));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        if let Some(s) = self.start {
            if self.buf.len() - s > self.max {
                return Err(FrameError::TooLarge { max: self.max });
            }
        }
        Ok(None)
    }
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_MESSAGE)
    }
}
