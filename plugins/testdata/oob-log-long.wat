;; Bad plugin template: answers the load probe correctly, then misbehaves on
;; every real call with a log call whose range starts inside memory and ends
;; past it: (call $log (i32.const 1) (i32.const 60000) (i32.const 10000)). The
;; first 4 KiB lie in memory; the whole range does not: an ABI violation.
(module
  (import "troupe" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 2048) "\ff\ff\ff\ff\ff\ff")
  (global $next (mut i32) (i32.const 4096))
  (func (export "abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func $probe (param $p i32) (result i32)
    ;; hook field (tag 0x10) at offset 2 holds 5 for HOOK_PROBE
    (i32.and
      (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 2))) (i32.const 0x10))
      (i32.eq (i32.load8_u (i32.add (local.get $p) (i32.const 3))) (i32.const 5))))
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (if (call $probe (local.get $p)) (then (return (i64.const 0))))
    (call $log (i32.const 1) (i32.const 60000) (i32.const 10000)) (i64.const 0))
)
