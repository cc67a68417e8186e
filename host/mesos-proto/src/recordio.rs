//! RecordIO framing of the SUBSCRIBE stream: `<decimal length>\n<bytes>` per record.

use bytes::{Buf, BytesMut};

/// Larger records are refused: a corrupt length must not make the reader buffer gigabytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordIoError {
    #[error("invalid RecordIO length prefix {0:?}")]
    BadLength(String),
    #[error("RecordIO record of {0} bytes exceeds the limit of {MAX_RECORD_BYTES}")]
    TooLarge(usize),
}

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 8);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// Incremental decoder: feed it bytes as they arrive (chunk boundaries need not match records)
/// and take complete records out.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
    want: Option<usize>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, if one is buffered.
    pub fn next_record(&mut self) -> Result<Option<bytes::Bytes>, RecordIoError> {
        if self.want.is_none() {
            let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > 20 {
                    return Err(RecordIoError::BadLength(
                        String::from_utf8_lossy(&self.buf[..20]).into_owned(),
                    ));
                }
                return Ok(None);
            };
            let digits = &self.buf[..nl];
            let text = String::from_utf8_lossy(digits).into_owned();
            let n: usize = if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                text.parse()
                    .map_err(|_| RecordIoError::BadLength(text.clone()))?
            } else {
                return Err(RecordIoError::BadLength(text));
            };
            if n == 0 {
                return Err(RecordIoError::BadLength(text));
            }
            if n > MAX_RECORD_BYTES {
                return Err(RecordIoError::TooLarge(n));
            }
            self.buf.advance(nl + 1);
            self.want = Some(n);
        }
        let n = self.want.expect("set above");
        if self.buf.len() < n {
            return Ok(None);
        }
        self.want = None;
        Ok(Some(self.buf.split_to(n).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_across_chunks_come_out_whole() {
        let mut wire = encode(b"{\"type\":\"HEARTBEAT\"}");
        assert_eq!(&wire[..3], b"20\n");
        wire.extend(encode(&[8, 8]));
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for b in &wire {
            d.feed(&[*b]);
            while let Some(r) = d.next_record().unwrap() {
                out.push(r.to_vec());
            }
        }
        assert_eq!(out, vec![b"{\"type\":\"HEARTBEAT\"}".to_vec(), vec![8, 8]]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        for bad in [
            &b"0\n"[..],
            b"x1\n",
            b"+5\nhello",
            b"123456789012345678901234",
        ] {
            let mut d = Decoder::default();
            d.feed(bad);
            assert!(d.next_record().is_err(), "{bad:?}");
        }
        let mut d = Decoder::default();
        d.feed(b"99999999999\n");
        assert_eq!(d.next_record(), Err(RecordIoError::TooLarge(99999999999)));
    }
}
