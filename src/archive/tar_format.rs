//! The bytes of the tar format that buildr reads and writes itself: header fields, checksums and
//! PAX records. Parsing here never panics and never allocates more than its input.

/// Tar's block size: headers and data are laid out in 512-byte blocks.
pub(crate) const BLOCK: usize = 512;

// Byte ranges of the ustar header fields.
pub(crate) const NAME: std::ops::Range<usize> = 0..100;
pub(crate) const MODE: std::ops::Range<usize> = 100..108;
pub(crate) const SIZE: std::ops::Range<usize> = 124..136;
pub(crate) const MTIME: std::ops::Range<usize> = 136..148;
pub(crate) const CHKSUM: std::ops::Range<usize> = 148..156;
pub(crate) const TYPEFLAG: usize = 156;
pub(crate) const LINKNAME: std::ops::Range<usize> = 157..257;
pub(crate) const MAGIC: std::ops::Range<usize> = 257..263;
pub(crate) const PREFIX: std::ops::Range<usize> = 345..500;

/// A numeric header field: octal text (NUL or space terminated), or GNU's base-256 (first
/// byte's high bit set) for values octal cannot hold. `None` if it is neither, is negative, or
/// overflows 64 bits.
pub(crate) fn parse_numeric(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None; // negative
        }
        let mut value = u64::from(first & 0x3f);
        for &b in rest {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| b != b' ' && b != 0);
    let mut value = 0u64;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// Whether the header's checksum field matches its bytes (unsigned sum, or the signed sum some
/// old writers used), with the field itself counted as spaces.
pub(crate) fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(want) = parse_numeric(&block[CHKSUM]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed)
}

/// A NUL-terminated header field's bytes.
pub(crate) fn field_str(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// The records of a PAX extended header, `"<len> <key>=<value>\n"` each, where len counts the
/// whole record. `None` if any record is malformed.
pub(crate) fn parse_pax(mut data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    // Writers pad the last record with NULs up to the block; nothing else may follow.
    while let Some(&first) = data.first() {
        if first == 0 {
            return data.iter().all(|&b| b == 0).then_some(out);
        }
        let space = data.iter().take(20).position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return None;
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=')?;
        out.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Some(out)
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where len counts the whole record.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  17 \0"), Some(0o17));
        assert_eq!(parse_numeric(b"\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"0008"), None);
        assert_eq!(parse_numeric(b"77777777777777777777777"), None, "overflow");
        assert_eq!(parse_numeric(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(&[0xff, 0xff]), None, "negative");
        assert_eq!(
            parse_numeric(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn pax_records_round_trip() {
        for vlen in [0, 1, 5, 90, 93, 94, 95, 200, 990, 996, 1000] {
            let mut v = Vec::new();
            pax_record(&mut v, "path", &vec![b'a'; vlen]);
            pax_record(&mut v, "k", b"x=y");
            let records = parse_pax(&v).expect("well-formed");
            assert_eq!(records.len(), 2);
            assert_eq!(records[0].1.len(), vlen);
            assert_eq!(records[1], (&b"k"[..], &b"x=y"[..]));
        }
        assert_eq!(parse_pax(b"6 a=b\n\0\0\0").map(|r| r.len()), Some(1));
        for bad in [
            &b"99 a=b\n"[..],
            b"6 ab\n",
            b"3 a\n",
            b"x a=b\n",
            b"5 a=b\nz",
        ] {
            assert!(
                parse_pax(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
