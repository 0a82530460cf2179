//! The floor: pre-serialized JSON-RPC bytes written to a plain unix socket, and the reply
//! read back only as far as needed to know it is complete (no parsing of its contents).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};

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
    /// Requests are never pipelined, so nothing but an `echo` can come before the reply.
    pub fn round_trip(&mut self, request: &[u8]) -> Result<usize> {
        self.stream.write_all(request)?;
        let mut scanner = Scanner::default();
        let mut size = 0usize;
        // The first bytes of a message tell a server request (`echo`) from our reply.
        let mut head: Vec<u8> = Vec::with_capacity(64);
        loop {
            let n = self.stream.read(&mut self.buf)?;
            if n == 0 {
                bail!("server closed the connection");
            }
            let mut start = 0;
            while start < n {
                if head.len() < 64 {
                    let take = (64 - head.len()).min(n - start);
                    head.extend_from_slice(&self.buf[start..start + take]);
                }
                match scanner.feed(&self.buf[start..n]) {
                    None => {
                        size += n - start;
                        break;
                    }
                    Some(end) if head.windows(8).any(|w| w == b"\"method\"") => {
                        self.stream
                            .write_all(br#"{"id":"echo","result":[],"error":null}"#)?;
                        scanner = Scanner::default();
                        head.clear();
                        size = 0;
                        start += end;
                    }
                    Some(end) => return Ok(size + end),
                }
            }
        }
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
}
