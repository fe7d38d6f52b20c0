//! The members of a zip archive as byte ranges of the archive itself, for archives whose
//! members are stored uncompressed, as `torch.save` writes them. Reading weights out of a
//! memory map needs exactly this (where each member lies), not a decompressing reader.
//! Handles zip64 (archives or members past 4 GiB); a compressed member is refused.

use std::collections::HashMap;
use std::ops::Range;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// The end record's size without its comment, and the longest comment it can have.
const END_LEN: usize = 22;
const MAX_COMMENT: usize = 0xffff;
/// The zip64 extra field's id, and the 32-bit value that says "see the zip64 field".
const ZIP64_EXTRA: u16 = 0x0001;
const IN_ZIP64: u32 = 0xffff_ffff;
const STORED: u16 = 0;

/// Whether `bytes` starts like a zip archive (a local file header).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(&LOCAL_HEADER.to_le_bytes())
}

/// Member name → the range of `archive` that holds its bytes.
pub fn stored_members(archive: &[u8]) -> Result<HashMap<String, Range<usize>>, String> {
    let bytes = Bytes(archive);
    let (count, mut at) = central_directory(bytes)?;
    // Grown entry by entry: a false count (up to the file's length in bytes) is found below,
    // and must not size an allocation first (a 1 GiB file asked for 88 GB; found by fuzzing).
    let mut members = HashMap::new();
    for _ in 0..count {
        if bytes.u32(at)? != CENTRAL_HEADER {
            return Err(format!("no central directory entry at byte {at}"));
        }
        let method = bytes.u16(at + 10)?;
        let (mut compressed, mut size) = (bytes.u32(at + 20)? as u64, bytes.u32(at + 24)? as u64);
        let name_len = bytes.u16(at + 28)? as usize;
        let extra_len = bytes.u16(at + 30)? as usize;
        let comment_len = bytes.u16(at + 32)? as usize;
        let mut local = bytes.u32(at + 42)? as u64;
        let name = bytes.slice(at + 46, name_len)?;
        let name = String::from_utf8_lossy(name).into_owned();
        // The zip64 field holds, in this order, the values whose 32-bit fields are full.
        let extra = bytes.slice(at + 46 + name_len, extra_len)?;
        if let Some(mut field) = zip64_field(extra) {
            for value in [&mut size, &mut compressed, &mut local] {
                if *value == IN_ZIP64 as u64 {
                    *value = field
                        .next()
                        .ok_or_else(|| format!("{name}: short zip64 field"))?;
                }
            }
        }
        if method != STORED || compressed != size {
            return Err(format!(
                "member {name} is compressed (method {method}); only stored members are read"
            ));
        }
        let local = usize::try_from(local).map_err(|_| format!("{name}: offset too large"))?;
        if bytes.u32(local)? != LOCAL_HEADER {
            return Err(format!("{name}: no local header at byte {local}"));
        }
        let start = local + 30 + bytes.u16(local + 26)? as usize + bytes.u16(local + 28)? as usize;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= archive.len())
            .ok_or_else(|| format!("{name}: its {size} bytes run past the end of the file"))?;
        members.insert(name, start..end);
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(members)
}

/// The number of central directory entries and where the first one starts.
fn central_directory(bytes: Bytes) -> Result<(usize, usize), String> {
    let len = bytes.0.len();
    let lowest = len.saturating_sub(END_LEN + MAX_COMMENT);
    // The end record is the last one whose comment reaches exactly to the end of the file.
    let end = (lowest..=len.saturating_sub(END_LEN))
        .rev()
        .find(|&at| {
            bytes.u32(at).ok() == Some(END)
                && bytes.u16(at + 20).ok().map(|c| at + END_LEN + c as usize) == Some(len)
        })
        .ok_or("no end of central directory record (truncated file?)")?;
    let count = bytes.u16(end + 10)? as u64;
    let offset = bytes.u32(end + 16)? as u64;
    let (count, offset) = if count == 0xffff || offset == IN_ZIP64 as u64 {
        let locator = end.checked_sub(20).ok_or("no zip64 end record locator")?;
        if bytes.u32(locator)? != ZIP64_LOCATOR {
            return Err("no zip64 end record locator".into());
        }
        let record = usize::try_from(bytes.u64(locator + 8)?).map_err(|e| e.to_string())?;
        if bytes.u32(record)? != ZIP64_END {
            return Err(format!("no zip64 end record at byte {record}"));
        }
        (bytes.u64(record + 32)?, bytes.u64(record + 48)?)
    } else {
        (count, offset)
    };
    let fits = |v: u64| usize::try_from(v).ok().filter(|&v| v <= len);
    match (fits(count), fits(offset)) {
        (Some(count), Some(offset)) => Ok((count, offset)),
        _ => Err(format!(
            "the central directory ({count} entries at byte {offset}) lies past the end of the file"
        )),
    }
}

/// The 64-bit values of the zip64 extra field, if `extra` has one.
fn zip64_field(extra: &[u8]) -> Option<impl Iterator<Item = u64> + '_> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[at], extra[at + 1]]);
        let len = u16::from_le_bytes([extra[at + 2], extra[at + 3]]) as usize;
        let data = extra.get(at + 4..at + 4 + len)?;
        if id == ZIP64_EXTRA {
            return Some(data.chunks_exact(8).map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            }));
        }
        at += 4 + len;
    }
    None
}

/// Little-endian reads that fail, rather than panic, past the end.
#[derive(Clone, Copy)]
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn slice(self, at: usize, len: usize) -> Result<&'a [u8], String> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or_else(|| format!("the file ends before byte {}", at.saturating_add(len)))
    }

    fn array<const N: usize>(self, at: usize) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(at, N)?);
        Ok(out)
    }

    fn u16(self, at: usize) -> Result<u16, String> {
        self.array(at).map(u16::from_le_bytes)
    }

    fn u32(self, at: usize) -> Result<u32, String> {
        self.array(at).map(u32::from_le_bytes)
    }

    fn u64(self, at: usize) -> Result<u64, String> {
        self.array(at).map(u64::from_le_bytes)
    }
}
