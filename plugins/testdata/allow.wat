;; Minimal sidecar: reads every byte of the request and allows (empty verdict).
(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 65536))
  (func (export "abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $sum i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.add (local.get $p) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    ;; store the checksum so the loop is not dead code
    (i32.store (i32.const 0) (local.get $sum))
    (i64.const 0))
)
