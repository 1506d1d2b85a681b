//! Byte and bit level primitives: LEB128 varints, zig-zag, and LSB-first bit streams.

use crate::{DecodeError, Result};

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over encoded bytes; every read checks bounds.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| DecodeError::new("truncated data"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::new("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::new("varint too long"));
            }
        }
    }

    pub fn ivarint(&mut self) -> Result<i64> {
        Ok(unzigzag(self.varint()?))
    }

    /// A varint that must fit `usize` and stay below `limit` (guards allocations).
    pub fn len(&mut self, limit: usize) -> Result<usize> {
        let v = self.varint()?;
        if v > limit as u64 {
            return Err(DecodeError::new(format!("length {v} exceeds limit {limit}")));
        }
        Ok(v as usize)
    }

    pub fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| DecodeError::new("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| DecodeError::new("truncated data"))?;
        self.pos = end;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(self.buf.len())?;
        self.take(n)
    }
}

/// LSB-first bit writer.
#[derive(Default)]
pub struct BitWriter {
    pub out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the low `width` bits of `v` (width ≤ 64).
    #[inline]
    pub fn write(&mut self, v: u64, width: u32) {
        if width == 0 {
            return;
        }
        let v = if width == 64 { v } else { v & ((1u64 << width) - 1) };
        let free = 64 - self.nbits;
        if width < free {
            self.acc |= v << self.nbits;
            self.nbits += width;
        } else {
            // Fill the accumulator, flush it, keep the rest.
            self.acc |= if self.nbits == 64 { 0 } else { v << self.nbits };
            self.out.extend_from_slice(&self.acc.to_le_bytes());
            let used = free;
            self.acc = if used == 64 { 0 } else { v >> used };
            self.nbits = width - used;
        }
    }

    #[inline]
    pub fn bit(&mut self, b: bool) {
        self.write(b as u64, 1);
    }

    pub fn finish(mut self) -> Vec<u8> {
        let nbytes = self.nbits.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..nbytes]);
        self.out
    }
}

/// LSB-first bit reader over a byte slice.
pub struct BitReader<'a> {
    buf: &'a [u8],
    bitpos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, bitpos: 0 }
    }

    #[inline]
    pub fn read(&mut self, width: u32) -> Result<u64> {
        if width == 0 {
            return Ok(0);
        }
        let end = self.bitpos + width as usize;
        if end > self.buf.len() * 8 {
            return Err(DecodeError::new("truncated bit stream"));
        }
        let byte = self.bitpos / 8;
        let shift = (self.bitpos % 8) as u32;
        // Up to 64 + 7 bits may be needed: read 9 bytes when available.
        let mut lo = [0u8; 8];
        let avail = (self.buf.len() - byte).min(8);
        lo[..avail].copy_from_slice(&self.buf[byte..byte + avail]);
        let mut v = u64::from_le_bytes(lo) >> shift;
        if shift + width > 64 {
            let hi = self.buf.get(byte + 8).copied().unwrap_or(0) as u64;
            v |= hi << (64 - shift);
        }
        self.bitpos = end;
        Ok(if width == 64 { v } else { v & ((1u64 << width) - 1) })
    }

    #[inline]
    pub fn bit(&mut self) -> Result<bool> {
        Ok(self.read(1)? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Reader::new(&out).varint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -123456789] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn truncated_varint_is_an_error() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
    }

    #[test]
    fn bits_round_trip_any_width() {
        let mut w = BitWriter::new();
        let mut expect = Vec::new();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for i in 0..2000u32 {
            let width = i % 65;
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = if width == 64 { x } else if width == 0 { 0 } else { x & ((1u64 << width) - 1) };
            w.write(v, width);
            expect.push((v, width));
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for (v, width) in expect {
            assert_eq!(r.read(width).unwrap(), v, "width {width}");
        }
        assert!(r.read(64).is_err());
    }
}
