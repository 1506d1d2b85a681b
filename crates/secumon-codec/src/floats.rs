//! Float sequences, bit-exact.
//!
//! Most monitoring values are decimals in disguise (`12.5`, `41.25`, byte counts): when every
//! value `v` of a sequence equals `round(v·10^k) / 10^k` bit for bit for some k ≤ 9, the scaled
//! integers go through the integer codec (differencing, gcd, bit-packing). Otherwise the values
//! are Gorilla XOR-coded (Pelkonen et al., VLDB 2015). Either way decoding restores the exact
//! bits, including -0.0 (which makes the decimal test fail and selects XOR).
//!
//! Layout: `u8 mode` then `u8 k, ints` (mode 0) or `varint n, bit stream` (mode 1).

use crate::bits::{put_varint, BitReader, BitWriter, Reader};
use crate::{ints, DecodeError, Result};

const MODE_DECIMAL: u8 = 0;
const MODE_XOR: u8 = 1;
const MAX_DECIMALS: u32 = 9;
/// Largest integer magnitude whose f64 conversions are exact.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn pow10(k: u32) -> f64 {
    10f64.powi(k as i32)
}

/// Smallest k for which every value is a k-decimal number, with the scaled integers.
fn as_decimals(values: &[f64]) -> Option<(u32, Vec<i64>)> {
    'k: for k in 0..=MAX_DECIMALS {
        let scale = pow10(k);
        let mut scaled = Vec::with_capacity(values.len());
        for &v in values {
            let s = (v * scale).round();
            // Check what the decoder will compute: the integer back to f64, divided.
            if !s.is_finite() || s.abs() >= EXACT_INT || ((s as i64) as f64 / scale).to_bits() != v.to_bits() {
                continue 'k;
            }
            scaled.push(s as i64);
        }
        return Some((k, scaled));
    }
    None
}

pub fn encode(values: &[f64], out: &mut Vec<u8>) {
    if let Some((k, scaled)) = as_decimals(values) {
        out.push(MODE_DECIMAL);
        out.push(k as u8);
        ints::encode(&scaled, out);
    } else {
        out.push(MODE_XOR);
        put_varint(out, values.len() as u64);
        let bits = gorilla_encode(values);
        put_varint(out, bits.len() as u64);
        out.extend_from_slice(&bits);
    }
}

pub fn decode(r: &mut Reader) -> Result<Vec<f64>> {
    match r.u8()? {
        MODE_DECIMAL => {
            let k = r.u8()? as u32;
            if k > MAX_DECIMALS {
                return Err(DecodeError::new(format!("decimal scale {k} out of range")));
            }
            let scale = pow10(k);
            Ok(ints::decode(r)?.into_iter().map(|s| s as f64 / scale).collect())
        }
        MODE_XOR => {
            let n = r.len(ints::MAX_VALUES)?;
            let bytes = r.bytes()?;
            gorilla_decode(bytes, n)
        }
        m => Err(DecodeError::new(format!("unknown float mode {m}"))),
    }
}

fn gorilla_encode(values: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::new();
    let Some(first) = values.first() else {
        return w.finish();
    };
    let mut prev = first.to_bits();
    w.write(prev, 64);
    // No previous window yet: force a new one on the first non-zero XOR.
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in &values[1..] {
        let cur = v.to_bits();
        let x = cur ^ prev;
        prev = cur;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.bit(false);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            w.bit(true);
            let len = 64 - l - t;
            w.write(l as u64, 5);
            w.write((len - 1) as u64, 6);
            w.write(x >> t, len);
            lead = l;
            trail = t;
        }
    }
    w.finish()
}

fn gorilla_decode(bytes: &[u8], n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n.min(1 << 16));
    if n == 0 {
        return Ok(out);
    }
    let mut r = BitReader::new(bytes);
    let mut prev = r.read(64)?;
    out.push(f64::from_bits(prev));
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    while out.len() < n {
        if r.bit()? {
            if r.bit()? {
                lead = r.read(5)? as u32;
                let len = r.read(6)? as u32 + 1;
                if lead + len > 64 {
                    return Err(DecodeError::new("bad XOR window"));
                }
                trail = 64 - lead - len;
            } else if lead == u32::MAX {
                return Err(DecodeError::new("XOR window used before it was set"));
            }
            let len = 64 - lead - trail;
            let x = r.read(len)? << trail;
            prev ^= x;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[f64]) -> usize {
        let mut out = Vec::new();
        encode(values, &mut out);
        let mut r = Reader::new(&out);
        let back = decode(&mut r).unwrap();
        assert_eq!(back.len(), values.len());
        for (a, b) in back.iter().zip(values) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
        assert!(r.is_empty());
        out.len()
    }

    fn lcg(x: &mut u64) -> f64 {
        *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        round_trip(&[]);
        round_trip(&[0.0]);
        round_trip(&[-0.0, 0.0, -0.0]);
        round_trip(&[f64::MIN_POSITIVE, f64::MAX, f64::MIN, 1e-300, 5e-324]);
        round_trip(&[0.1, 0.2, 0.30000000000000004, 1.0 / 3.0]);
        round_trip(&[1e20, -1e20, 123456789012345678.0]);
    }

    #[test]
    fn two_decimal_gauge_costs_under_two_bytes() {
        let mut x = 1;
        let mut v: f64 = 40.0;
        let vals: Vec<f64> = (0..8640)
            .map(|_| {
                v = (v + (lcg(&mut x) - 0.5) * 2.0).clamp(0.0, 100.0);
                (v * 100.0).round() / 100.0
            })
            .collect();
        let size = round_trip(&vals);
        assert!(size < 8640 * 2, "two-decimal gauge took {size} bytes");
    }

    #[test]
    fn arbitrary_doubles_use_xor_and_still_round_trip() {
        let mut x = 3;
        let vals: Vec<f64> = (0..5000).map(|i| (i as f64).sin() * lcg(&mut x)).collect();
        round_trip(&vals);
        let mut out = Vec::new();
        encode(&vals, &mut out);
        assert_eq!(out[0], MODE_XOR);
    }

    #[test]
    fn slowly_moving_xor_values_compress() {
        let vals: Vec<f64> = (0..5000).map(|i| 0.42 + ((i / 50) as f64) * (1.0 / 3.0)).collect();
        let size = round_trip(&vals);
        assert!(size < 5000 * 2, "step function took {size} bytes");
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let vals: Vec<f64> = (0..300).map(|i| (i as f64).sqrt()).collect();
        let mut out = Vec::new();
        encode(&vals, &mut out);
        for cut in 0..out.len() {
            let _ = decode(&mut Reader::new(&out[..cut]));
        }
        let mut flipped = out.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&mut Reader::new(&flipped));
            flipped[i] ^= 0x5a;
        }
    }
}
