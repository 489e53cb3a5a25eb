//! max-payload: a Troupe sidecar plugin in Rust (ABI v1, docs/plugins.md).
//!
//! Rejects commands and topic messages whose payload is larger than the
//! configured max_bytes (default 1024) and annotates the ones it lets
//! through with `size-checked-by: max-payload`. Plain std Rust, no crates:
//! it decodes the few protobuf fields it needs by hand.

use std::cell::RefCell;

#[link(wasm_import_module = "troupe")]
extern "C" {
    fn log(level: i32, ptr: *const u8, len: u32);
    fn config_get(key: *const u8, key_len: u32, out: *mut u8, out_cap: u32) -> i32;
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    static MAX: RefCell<Option<usize>> = RefCell::new(None);
}

#[no_mangle]
pub extern "C" fn abi_version() -> i32 {
    1
}

#[no_mangle]
pub extern "C" fn alloc(size: u32) -> *mut u8 {
    let mut v = Vec::<u8>::with_capacity(size.max(1) as usize);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub unsafe extern "C" fn dealloc(ptr: *mut u8, size: u32) {
    drop(Vec::from_raw_parts(ptr, 0, size.max(1) as usize));
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&c, rest) = b.split_first()?;
        *b = rest;
        v |= ((c & 0x7f) as u64) << shift;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Returns the length-delimited field `num` of message `m`.
fn field<'a>(mut m: &'a [u8], num: u64) -> Option<&'a [u8]> {
    while !m.is_empty() {
        let tag = varint(&mut m)?;
        match tag & 7 {
            0 => {
                varint(&mut m)?;
            }
            1 => m = m.get(8..)?,
            5 => m = m.get(4..)?,
            2 => {
                let len = varint(&mut m)? as usize;
                let v = m.get(..len)?;
                if tag >> 3 == num {
                    return Some(v);
                }
                m = &m[len..];
            }
            _ => return None,
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, num: u64, s: &[u8]) {
    put_varint(out, num << 3 | 2);
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn max_bytes() -> usize {
    MAX.with(|m| {
        *m.borrow_mut().get_or_insert_with(|| {
            let key = b"max_bytes";
            let mut buf = [0u8; 32];
            let n = unsafe { config_get(key.as_ptr(), key.len() as u32, buf.as_mut_ptr(), buf.len() as u32) };
            if n < 0 || n as usize > buf.len() {
                return 1024;
            }
            std::str::from_utf8(&buf[..n as usize]).ok().and_then(|s| s.parse().ok()).unwrap_or(1024)
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn handle(ptr: *const u8, len: u32) -> u64 {
    let req = std::slice::from_raw_parts(ptr, len as usize);
    // PluginRequest.command = 10 (payload = 6), PluginRequest.topic = 12 (payload = 2).
    let payload_len = if let Some(c) = field(req, 10) {
        field(c, 6).map_or(0, |p| p.len())
    } else if let Some(t) = field(req, 12) {
        field(t, 2).map_or(0, |p| p.len())
    } else {
        return 0; // probe or another hook: allow
    };
    let max = max_bytes();
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        if payload_len > max {
            let reason = format!("payload of {} bytes exceeds the limit of {} bytes", payload_len, max);
            let line = format!("max-payload: {}", reason);
            log(2, line.as_ptr(), line.len() as u32);
            out.extend_from_slice(&[0x08, 0x01]); // reject = true
            put_str(&mut out, 2, reason.as_bytes());
        } else {
            // metadata (field 4) entry {key: 1, value: 2}
            let mut entry = Vec::new();
            put_str(&mut entry, 1, b"size-checked-by");
            put_str(&mut entry, 2, b"max-payload");
            put_str(&mut out, 4, &entry);
        }
        ((out.as_ptr() as u64) << 32) | out.len() as u64
    })
}
