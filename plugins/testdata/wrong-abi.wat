;; Bad plugin: speaks ABI version 2.
(module
  (memory (export "memory") 1)
  (func (export "abi_version") (result i32) (i32.const 2))
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "handle") (param i32 i32) (result i64) (i64.const 0))
)
