//! The floor: pre-serialized JSON-RPC bytes written to a plain unix socket, and the reply
//! read back only as far as needed to know it is complete (no parsing of its contents).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A plain connection to ovsdb-server for requests that are never pipelined.
pub struct RawConn {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// Scans JSON text for the end of top-level values (strings and escapes respected).
#[derive(Default)]
struct Scanner {
    depth: u32,
    in_str: bool,
    esc: bool,
}

impl Scanner {
    /// Feeds bytes; returns the index just past the end of the first complete value.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// How many first bytes of a message tell a server request (`echo`) from our reply.
const PEEK: usize = 64;
/// With an excerpt: how much of the reply's start and end is kept.
const EXCERPT_HEAD: usize = 4096;
const EXCERPT_TAIL: usize = 256;

impl RawConn {
    pub fn connect(sock: &Path) -> Result<RawConn> {
        let stream =
            UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
        Ok(RawConn {
            stream,
            buf: vec![0; 1 << 20],
        })
    }

    /// Writes `request` and reads until the reply to it is complete; returns its size.
    /// Requests are never pipelined, so nothing but an `echo` (answered here) can come
    /// before the reply.
    pub fn round_trip(&mut self, request: &[u8]) -> Result<usize> {
        self.exchange(request, None)
    }

    /// [`round_trip`](Self::round_trip) that also returns an excerpt of the reply (its
    /// first 4 kB, ` ... `, its last bytes): enough to spot an `"error"`.
    pub fn round_trip_excerpt(&mut self, request: &[u8]) -> Result<(Vec<u8>, usize)> {
        let mut excerpt = Excerpt::default();
        let size = self.exchange(request, Some(&mut excerpt))?;
        let mut text = excerpt.head;
        text.extend_from_slice(b" ... ");
        text.extend_from_slice(&excerpt.tail);
        Ok((text, size))
    }

    fn exchange(&mut self, request: &[u8], mut excerpt: Option<&mut Excerpt>) -> Result<usize> {
        self.stream.write_all(request)?;
        let mut scanner = Scanner::default();
        let mut size = 0usize;
        let mut head: Vec<u8> = Vec::with_capacity(PEEK);
        loop {
            let n = self.stream.read(&mut self.buf)?;
            if n == 0 {
                bail!("server closed the connection");
            }
            let mut start = 0;
            while start < n {
                if head.len() < PEEK {
                    let take = (PEEK - head.len()).min(n - start);
                    head.extend_from_slice(&self.buf[start..start + take]);
                }
                let found = scanner.feed(&self.buf[start..n]);
                let end = found.map_or(n, |e| start + e);
                if let Some(x) = excerpt.as_deref_mut() {
                    x.keep(&self.buf[start..end], found.is_none());
                }
                match found {
                    None => {
                        size += n - start;
                        break;
                    }
                    Some(e) if head.windows(8).any(|w| w == b"\"method\"") => {
                        self.stream
                            .write_all(br#"{"id":"echo","result":[],"error":null}"#)?;
                        scanner = Scanner::default();
                        head.clear();
                        if let Some(x) = excerpt.as_deref_mut() {
                            *x = Excerpt::default();
                        }
                        size = 0;
                        start += e;
                    }
                    Some(e) => return Ok(size + e),
                }
            }
        }
    }
}

/// The start and the end of a reply, collected while it is read.
#[derive(Default)]
struct Excerpt {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Excerpt {
    /// `chunk` is the next piece of the reply; `more` says whether the reply goes on.
    fn keep(&mut self, chunk: &[u8], more: bool) {
        let room = EXCERPT_HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if more {
            self.tail.clear();
        }
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(EXCERPT_TAIL)..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_value_ends_despite_brackets_in_strings() {
        let mut s = Scanner::default();
        let text = br#"{"a":"}]\"{","b":[1,{"c":2}]}{"next":1}"#;
        let end = s.feed(text).expect("complete");
        assert_eq!(&text[..end], br#"{"a":"}]\"{","b":[1,{"c":2}]}"#);
        let mut s = Scanner::default();
        assert_eq!(s.feed(br#"{"a":"x"#), None);
        assert_eq!(s.feed(br#"y"}"#), Some(3));
    }

    #[test]
    fn excerpt_keeps_head_and_tail() {
        let mut x = Excerpt::default();
        x.keep(&[b'a'; 5000], true);
        x.keep(&[b'b'; 300], true);
        x.keep(&[b'c'; 10], false);
        assert_eq!(x.head.len(), EXCERPT_HEAD);
        assert!(x.head.iter().all(|&b| b == b'a'));
        assert_eq!(x.tail.len(), EXCERPT_TAIL + 10);
        assert!(x.tail.ends_with(&[b'c'; 10]));
    }
}
