// tag-topic: a Troupe sidecar plugin in AssemblyScript (ABI v1,
// docs/plugins.md). It rejects empty messages on the topics it hooks and
// annotates the others with `tagged-by: tag-topic` and a per-instance
// sequence number. It decodes the protobuf fields it needs by hand.

@external("troupe", "log")
declare function troupe_log(level: i32, ptr: usize, len: u32): void;

export function abi_version(): i32 {
  return 1;
}

export function alloc(size: u32): usize {
  return heap.alloc(size > 0 ? <usize>size : 1);
}

export function dealloc(ptr: usize, size: u32): void {
  heap.free(ptr);
}

// The verdict buffer: the host copies it before the next call.
const OUT_CAP: u32 = 4096;
const OUT: usize = heap.alloc(OUT_CAP);
let outLen: u32 = 0;
let seq: u64 = 0;

// Cursor over a message.
let cur: usize = 0;
let end: usize = 0;
let bad = false;

function varint(): u64 {
  let v: u64 = 0;
  for (let shift: u64 = 0; shift < 64; shift += 7) {
    if (cur >= end) { bad = true; return 0; }
    const c = load<u8>(cur++);
    v |= (<u64>(c & 0x7f)) << shift;
    if ((c & 0x80) == 0) return v;
  }
  bad = true;
  return 0;
}

// Finds length-delimited field num in [start, stop); sets fieldPtr/fieldLen.
let fieldPtr: usize = 0;
let fieldLen: u32 = 0;
function field(start: usize, stop: usize, num: u64): bool {
  cur = start; end = stop; bad = false;
  while (cur < end && !bad) {
    const tag = varint();
    const wt = tag & 7;
    if (wt == 0) { varint(); }
    else if (wt == 1) { cur += 8; }
    else if (wt == 5) { cur += 4; }
    else if (wt == 2) {
      const len = <usize>varint();
      if (bad || len > end - cur) return false;
      if ((tag >> 3) == num) { fieldPtr = cur; fieldLen = <u32>len; return true; }
      cur += len;
    } else return false;
  }
  return false;
}

function putByte(b: u32): void {
  if (outLen < OUT_CAP) store<u8>(OUT + outLen, <u8>b);
  outLen++;
}
function putVarint(v: u64): void {
  while (v >= 0x80) { putByte(<u32>(v & 0x7f) | 0x80); v >>= 7; }
  putByte(<u32>v);
}
function putBytes(ptr: usize, len: u32): void {
  for (let i: u32 = 0; i < len; i++) putByte(load<u8>(ptr + i));
}
function putString(num: u64, s: string): void {
  const b = String.UTF8.encode(s);
  putVarint((num << 3) | 2);
  putVarint(<u64>b.byteLength);
  putBytes(changetype<usize>(b), <u32>b.byteLength);
}
function putEntry(k: string, v: string): void {
  const kb = String.UTF8.encode(k), vb = String.UTF8.encode(v);
  putVarint((4 << 3) | 2); // Verdict.metadata
  putVarint(<u64>(2 + kb.byteLength + 2 + vb.byteLength)); // short strings: 1-byte tag + 1-byte length
  putVarint((1 << 3) | 2); putVarint(<u64>kb.byteLength); putBytes(changetype<usize>(kb), <u32>kb.byteLength);
  putVarint((2 << 3) | 2); putVarint(<u64>vb.byteLength); putBytes(changetype<usize>(vb), <u32>vb.byteLength);
}

function result(): u64 {
  if (outLen > OUT_CAP) outLen = 0; // cannot happen with our short strings; allow rather than lie
  return (<u64>OUT << 32) | <u64>outLen;
}

export function handle(ptr: usize, len: u32): u64 {
  outLen = 0;
  // PluginRequest.topic = 12; TopicMessage.topic = 1, payload = 2.
  if (!field(ptr, ptr + len, 12)) return 0;
  const msg = fieldPtr, msgLen = fieldLen;
  let topic = "";
  if (field(msg, msg + msgLen, 1)) topic = String.UTF8.decodeUnsafe(fieldPtr, fieldLen);
  const hasPayload = field(msg, msg + msgLen, 2) && fieldLen > 0;
  if (!hasPayload) {
    const reason = "empty message on topic " + topic;
    const line = String.UTF8.encode("tag-topic: rejected " + reason);
    troupe_log(2, changetype<usize>(line), <u32>line.byteLength);
    putByte(0x08); putByte(0x01); // reject = true
    putString(2, reason);
    return result();
  }
  seq++;
  putEntry("tagged-by", "tag-topic");
  putEntry("tag-seq", seq.toString());
  return result();
}
