;; Loops that write locals of every value type, and a loop with block
;; parameters, for TestRefuelKeepsState: with a refuel at nearly every
;; checkpoint, mix(n) must return what the unmetered module returns.
(module
  (func (export "mix") (param $n i32) (result i64)
    (local $i i32) (local $a i64) (local $f f32) (local $d f64) (local $v v128) (local $r funcref)
    (local.set $f (f32.const 1.5))
    (local.set $d (f64.const 2.25))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $a (i64.add (i64.mul (local.get $a) (i64.const 31)) (i64.extend_i32_u (local.get $i))))
        (local.set $f (f32.add (local.get $f) (f32.const 0.5)))
        (local.set $d (f64.mul (local.get $d) (f64.const 1.0001)))
        (local.set $v (i32x4.add (local.get $v) (i32x4.splat (local.get $i))))
        (local.set $r (ref.null func))
        ;; a nested loop: its writes are the outer loop's too
        (block $inner
          (loop $k
            (br_if $inner (i32.ge_u (i32.and (local.get $i) (i32.const 3)) (i32.const 3)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (local.set $a (i64.xor (local.get $a) (i64.const 0x5555)))
            (br $k)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    ;; a loop with block parameters: its checkpoint cannot restart it
    (i32.const 0) (local.get $a)
    (loop $p (param i32 i64) (result i32 i64)
      (local.set $a)
      (local.set $i)
      (i32.add (local.get $i) (i32.const 1))
      (i64.add (i64.rotl (local.get $a) (i64.const 7)) (i64.extend_i32_u (local.get $i)))
      (br_if $p (i32.lt_u (local.get $i) (local.get $n))))
    (local.set $a)
    (drop)
    (i64.add (local.get $a) (i64.reinterpret_f64 (local.get $d)))
    (i64.add (i64.extend_i32_u (i32.reinterpret_f32 (local.get $f))))
    (i64.add (i64x2.extract_lane 0 (local.get $v)))
    (i64.add (i64.extend_i32_u (ref.is_null (local.get $r)))))
)
