//! Integer sequences: the best of order 0, 1 or 2 differencing (raw, delta, delta-of-delta),
//! divided by the residuals' greatest common divisor (memory sizes move in whole pages, uptime
//! in whole seconds), then frame-of-reference bit-packing in blocks of 128.
//!
//! Layout: `varint n, u8 order, order × ivarint head, varint gcd, blocks`; a block is
//! `ivarint min, u8 width, ceil(len·width/8) bytes`. A constant or perfectly regular sequence
//! costs about two bytes per 128 values. All arithmetic wraps, so every i64 round-trips.

use crate::bits::{put_ivarint, put_varint, zigzag, BitReader, BitWriter, Reader};
use crate::{DecodeError, Result};

pub const BLOCK: usize = 128;

/// Upper bound on the element count a decoder accepts (guards allocations on corrupt input).
pub const MAX_VALUES: usize = 1 << 28;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

fn varint_len(v: u64) -> usize {
    ((64 - v.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// Heads and residuals of `values` differenced `order` times.
fn difference(values: &[i64], order: usize) -> (Vec<i64>, Vec<i64>) {
    let mut cur = values.to_vec();
    let mut heads = Vec::with_capacity(order);
    for _ in 0..order {
        if cur.is_empty() {
            break;
        }
        heads.push(cur[0]);
        cur = cur.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    }
    (heads, cur)
}

fn residual_gcd(res: &[i64]) -> u64 {
    let mut g = 0u64;
    for &r in res {
        g = gcd(g, r.unsigned_abs());
        if g == 1 {
            break;
        }
    }
    g.max(1)
}

fn block_width(block: &[i64]) -> (i64, u32) {
    let min = *block.iter().min().unwrap_or(&0);
    let max_off = block.iter().map(|&v| (v as u64).wrapping_sub(min as u64)).max().unwrap_or(0);
    (min, 64 - max_off.leading_zeros())
}

/// Encoded size in bytes of residuals `res` (after dividing by their gcd).
fn cost(heads: &[i64], res: &[i64]) -> usize {
    let g = residual_gcd(res);
    let mut total = 2 + heads.iter().map(|&h| varint_len(zigzag(h))).sum::<usize>() + varint_len(g);
    let mut scaled = Vec::with_capacity(BLOCK);
    for block in res.chunks(BLOCK) {
        scaled.clear();
        scaled.extend(block.iter().map(|&r| if g == 1 { r } else { r / g as i64 }));
        let (min, width) = block_width(&scaled);
        total += varint_len(zigzag(min)) + 1 + (block.len() * width as usize).div_ceil(8);
    }
    total
}

/// Appends the encoding of `values` to `out`.
pub fn encode(values: &[i64], out: &mut Vec<u8>) {
    put_varint(out, values.len() as u64);
    let mut best = (usize::MAX, 0usize, Vec::new(), Vec::new());
    for order in 0..=2usize {
        if order > 0 && values.len() <= order {
            break;
        }
        let (heads, res) = difference(values, order);
        let c = cost(&heads, &res);
        if c < best.0 {
            best = (c, order, heads, res);
        }
    }
    let (_, order, heads, res) = best;
    out.push(order as u8);
    for h in &heads {
        put_ivarint(out, *h);
    }
    let g = residual_gcd(&res);
    put_varint(out, g);
    let mut scaled = Vec::with_capacity(BLOCK);
    for block in res.chunks(BLOCK) {
        scaled.clear();
        scaled.extend(block.iter().map(|&r| if g == 1 { r } else { r / g as i64 }));
        let (min, width) = block_width(&scaled);
        put_ivarint(out, min);
        out.push(width as u8);
        let mut w = BitWriter::new();
        for &v in &scaled {
            w.write((v as u64).wrapping_sub(min as u64), width);
        }
        out.extend_from_slice(&w.finish());
    }
}

/// Decodes one sequence written by [`encode`].
pub fn decode(r: &mut Reader) -> Result<Vec<i64>> {
    let n = r.len(MAX_VALUES)?;
    let order = r.u8()? as usize;
    if order > 2 {
        return Err(DecodeError::new(format!("unknown integer order {order}")));
    }
    let nheads = order.min(n);
    let mut heads = Vec::with_capacity(nheads);
    for _ in 0..nheads {
        heads.push(r.ivarint()?);
    }
    let g = r.varint()?;
    if g == 0 {
        return Err(DecodeError::new("zero gcd"));
    }
    let nres = n - nheads;
    // Capacity grows with the data actually present, whatever a corrupt length claims.
    let mut res = Vec::with_capacity(nres.min(1 << 16));
    while res.len() < nres {
        let len = (nres - res.len()).min(BLOCK);
        let min = r.ivarint()?;
        let width = r.u8()? as u32;
        if width > 64 {
            return Err(DecodeError::new(format!("bit width {width} > 64")));
        }
        let bytes = r.take((len * width as usize).div_ceil(8))?;
        let mut br = BitReader::new(bytes);
        for _ in 0..len {
            let off = br.read(width)?;
            res.push((min as u64).wrapping_add(off) as i64);
        }
    }
    if g != 1 {
        for v in res.iter_mut() {
            *v = v.wrapping_mul(g as i64);
        }
    }
    // Undo the differencing, innermost first.
    let mut cur = res;
    for h in heads.iter().rev() {
        let mut next = Vec::with_capacity(cur.len() + 1);
        let mut acc = *h;
        next.push(acc);
        for d in cur {
            acc = acc.wrapping_add(d);
            next.push(acc);
        }
        cur = next;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[i64]) -> usize {
        let mut out = Vec::new();
        encode(values, &mut out);
        let mut r = Reader::new(&out);
        assert_eq!(decode(&mut r).unwrap(), values);
        assert!(r.is_empty(), "decoder consumed every byte");
        out.len()
    }

    #[test]
    fn edge_cases_round_trip() {
        round_trip(&[]);
        round_trip(&[0]);
        round_trip(&[i64::MIN]);
        round_trip(&[i64::MIN, i64::MAX, 0, -1, i64::MAX, i64::MIN]);
        round_trip(&[5, 5]);
        round_trip(&(0..1000).map(|i| i * i * i - 7).collect::<Vec<_>>());
    }

    #[test]
    fn regular_timestamps_cost_almost_nothing() {
        let ts: Vec<i64> = (0..8640).map(|i| 1_700_000_000_000_000 + i * 10_000_000).collect();
        let size = round_trip(&ts);
        assert!(size < 200, "8640 regular timestamps took {size} bytes");
    }

    #[test]
    fn jittered_timestamps_cost_under_two_bytes_each() {
        let mut x = 1u64;
        let ts: Vec<i64> = (0..8640)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                1_700_000_000_000_000 + i * 10_000_000 + ((x >> 40) % 5000) as i64
            })
            .collect();
        let size = round_trip(&ts);
        assert!(size < 8640 * 2, "jittered timestamps took {size} bytes");
    }

    #[test]
    fn page_sized_steps_are_divided_by_their_gcd() {
        let mut x = 7u64;
        let mut v = 3_500_000_000i64;
        let vals: Vec<i64> = (0..8640)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                v += (((x >> 33) % 64) as i64 - 32) * 4096;
                v
            })
            .collect();
        let size = round_trip(&vals);
        assert!(size < 8640, "page-aligned gauge took {size} bytes (want < 1 B/value)");
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(&(0..500).collect::<Vec<_>>(), &mut out);
        for cut in 0..out.len() {
            let _ = decode(&mut Reader::new(&out[..cut]));
        }
        let mut bad = out.clone();
        bad[1] = 9;
        assert!(decode(&mut Reader::new(&bad)).is_err());
    }
}
