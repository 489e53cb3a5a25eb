;; Bad plugin: handle never returns, not even for the load-time probe.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func (export "abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64)
    (loop $forever (br $forever)) (unreachable))
)
