;; The batch kernel's two multiply-add loops in WebAssembly SIMD (f64x2), about 4x the plain
;; JavaScript loops. Accumulators are float64, inputs are u32 residues or float64 squares;
;; every value is an integer below 2^53, so the sums are exact whatever the order.
;; Compiled by scripts/build-kernel.ts into kernel-wasm.ts; test/unit/batch-kernel.test.ts checks
;; that the committed binary is this source's.
(module
  (memory (export "memory") 1)
  ;; r0..r3[i] += wa_r * xa[i] + wb_r * xb[i] for i < n (n even): four rows, two taps.
  ;; r*: float64 accumulators, xa/xb: u32 residues (byte offsets).
  (func (export "mac4")
    (param $r0 i32) (param $r1 i32) (param $r2 i32) (param $r3 i32) (param $xa i32) (param $xb i32)
    (param $wa0 f64) (param $wb0 f64) (param $wa1 f64) (param $wb1 f64)
    (param $wa2 f64) (param $wb2 f64) (param $wa3 f64) (param $wb3 f64) (param $n i32)
    (local $i i32) (local $va v128) (local $vb v128) (local $o i32)
    (local $A0 v128) (local $B0 v128) (local $A1 v128) (local $B1 v128)
    (local $A2 v128) (local $B2 v128) (local $A3 v128) (local $B3 v128)
    (local.set $A0 (f64x2.splat (local.get $wa0))) (local.set $B0 (f64x2.splat (local.get $wb0)))
    (local.set $A1 (f64x2.splat (local.get $wa1))) (local.set $B1 (f64x2.splat (local.get $wb1)))
    (local.set $A2 (f64x2.splat (local.get $wa2))) (local.set $B2 (f64x2.splat (local.get $wb2)))
    (local.set $A3 (f64x2.splat (local.get $wa3))) (local.set $B3 (f64x2.splat (local.get $wb3)))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $va (f64x2.convert_low_i32x4_u (v128.load64_zero (i32.add (local.get $xa) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $vb (f64x2.convert_low_i32x4_u (v128.load64_zero (i32.add (local.get $xb) (i32.shl (local.get $i) (i32.const 2))))))
      (local.set $o (i32.shl (local.get $i) (i32.const 3)))
      (v128.store (i32.add (local.get $r0) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $r0) (local.get $o)))
          (f64x2.add (f64x2.mul (local.get $A0) (local.get $va)) (f64x2.mul (local.get $B0) (local.get $vb)))))
      (v128.store (i32.add (local.get $r1) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $r1) (local.get $o)))
          (f64x2.add (f64x2.mul (local.get $A1) (local.get $va)) (f64x2.mul (local.get $B1) (local.get $vb)))))
      (v128.store (i32.add (local.get $r2) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $r2) (local.get $o)))
          (f64x2.add (f64x2.mul (local.get $A2) (local.get $va)) (f64x2.mul (local.get $B2) (local.get $vb)))))
      (v128.store (i32.add (local.get $r3) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $r3) (local.get $o)))
          (f64x2.add (f64x2.mul (local.get $A3) (local.get $va)) (f64x2.mul (local.get $B3) (local.get $vb)))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $top))))
  ;; dst[i] += wa * sa[i] + wb * sb[i] + wc * sc[i] + wd * sd[i] for i < n (n even): all float64.
  (func (export "acc4")
    (param $dst i32) (param $sa i32) (param $sb i32) (param $sc i32) (param $sd i32)
    (param $wa f64) (param $wb f64) (param $wc f64) (param $wd f64) (param $n i32)
    (local $i i32) (local $o i32) (local $A v128) (local $B v128) (local $C v128) (local $D v128)
    (local.set $A (f64x2.splat (local.get $wa))) (local.set $B (f64x2.splat (local.get $wb)))
    (local.set $C (f64x2.splat (local.get $wc))) (local.set $D (f64x2.splat (local.get $wd)))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $o (i32.shl (local.get $i) (i32.const 3)))
      (v128.store (i32.add (local.get $dst) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $dst) (local.get $o)))
          (f64x2.add
            (f64x2.add (f64x2.mul (local.get $A) (v128.load (i32.add (local.get $sa) (local.get $o))))
                       (f64x2.mul (local.get $B) (v128.load (i32.add (local.get $sb) (local.get $o)))))
            (f64x2.add (f64x2.mul (local.get $C) (v128.load (i32.add (local.get $sc) (local.get $o))))
                       (f64x2.mul (local.get $D) (v128.load (i32.add (local.get $sd) (local.get $o))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $top)))))
