//! What more than one bench builds: a tree of text files shaped like source code.

// Helpers of tests and benchmarks fail loudly by design: `unwrap()` is their assertion.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A vocabulary of 2,000 pronounceable words, picked with a skew like real text.
fn vocabulary(rng: &mut Rng) -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "to", "ri", "an", "el", "mo", "su", "in", "ve", "ra", "lo", "ne", "ti", "pa", "de",
        "or", "us", "ba", "ce", "fi", "gu", "ho", "le", "st",
    ];
    (0..2000)
        .map(|_| {
            let n = 1 + rng.next() % 4;
            (0..n)
                .map(|_| SYL[(rng.next() % SYL.len() as u64) as usize])
                .collect()
        })
        .collect()
}

/// `files` files of word-like text, `total` bytes in all, 100 to a directory, sizes from 0.1x
/// to 1.9x the average (deterministic: the same tree every time). Returns the bytes written.
pub fn make_text_tree(root: &Path, files: usize, total: usize) -> u64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words = vocabulary(&mut rng);
    let avg = total / files;
    let mut written = 0u64;
    let mut text = Vec::with_capacity(avg * 2);
    for i in 0..files {
        let dir = root.join(format!("dir{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        // Sizes from 0.1x to 1.9x the average.
        let size = avg / 10 + (rng.next() % (avg as u64 * 9 / 5)) as usize;
        text.clear();
        while text.len() < size {
            // Squaring skews towards the first words, as in real text.
            let r = rng.next() % 2000;
            let w = &words[(r * r / 2000) as usize];
            text.extend_from_slice(w.as_bytes());
            text.push(if rng.next().is_multiple_of(12) {
                b'\n'
            } else {
                b' '
            });
        }
        text.truncate(size);
        fs::write(dir.join(format!("file{i:05}.txt")), &text).unwrap();
        written += size as u64;
    }
    written
}
