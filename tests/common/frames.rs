//! Snappy frame streams taken apart and put back together, for the archive tests.

use std::io::{Read, Write};
use std::ops::Range;

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn snappy(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = snap::write::FrameEncoder::new(&mut out);
    enc.write_all(data).unwrap();
    drop(enc);
    out
}

pub fn unsnappy(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    snap::read::FrameDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The chunks of a Snappy frame stream, as byte ranges (the stream identifier is the first).
pub fn chunks(stream: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= stream.len() {
        let len = u32::from_le_bytes([stream[at + 1], stream[at + 2], stream[at + 3], 0]) as usize;
        out.push(at..(at + 4 + len).min(stream.len()));
        at += 4 + len;
    }
    out
}

/// The chunks of `stream` in `order` (chunk indices, repeats and omissions allowed).
pub fn reassemble(stream: &[u8], ranges: &[Range<usize>], order: &[usize]) -> Vec<u8> {
    order
        .iter()
        .flat_map(|&i| stream[ranges[i].clone()].to_vec())
        .collect()
}
