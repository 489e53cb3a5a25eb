;; Bad plugin: _initialize (run when each instance is created) never returns.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func (export "_initialize") (loop $forever (br $forever)))
  (func (export "abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64) (i64.const 0))
)
