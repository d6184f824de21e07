;; __NAME__: a Portcullis tenant plugin in WebAssembly text (plugin ABI v1). No toolchain needed:
;; `portcullis plugin validate __NAME__.wat --out __NAME__.wasm` checks and converts it.
;;
;; The rule (a starting point, edit it): reads apply as granted; any other action applies only
;; inside the UTC maintenance window 22:00-06:00, else the plugin abstains with a reason.
(module
  (import "portcullis" "set_reason" (func $set_reason (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "outside the maintenance window (22:00-06:00 UTC)")

  (func (export "portcullis_abi_version") (result i32) (i32.const 1))

  ;; The input goes into the second page (inputs are at most 64 KiB); 0 refuses.
  (func (export "portcullis_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65536))
      (then (i32.const 0))
      (else (i32.const 65536))))

  (func (export "portcullis_evaluate") (param $p i32) (param $len i32) (result i32)
    (local $hour i64)
    ;; The verb: string ref (offset, len) at header offset 40. "read" read as a little-endian
    ;; u32 is 0x64616572.
    (if (i32.and
          (i32.eq (i32.load offset=44 (local.get $p)) (i32.const 4))
          (i32.eq (i32.load (i32.add (local.get $p) (i32.load offset=40 (local.get $p))))
                  (i32.const 0x64616572)))
      (then (return (i32.const 1))))
    ;; now (i64 unix seconds, never negative) at offset 8: hour = now mod 86400 / 3600.
    (local.set $hour
      (i64.div_u (i64.rem_u (i64.load offset=8 (local.get $p)) (i64.const 86400)) (i64.const 3600)))
    (if (i32.or (i64.ge_u (local.get $hour) (i64.const 22)) (i64.lt_u (local.get $hour) (i64.const 6)))
      (then (return (i32.const 1))))
    (call $set_reason (i32.const 16) (i32.const 48))
    (i32.const 0)))
