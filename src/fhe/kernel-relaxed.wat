;; The batch kernel's first-layer loop (kernel.wat's mac4) with fused multiply-adds
;; (relaxed SIMD: f64x2.relaxed_madd), for the server. Every value is an integer below 2^53, so a
;; fused and an unfused multiply-add give the same exact sums, and the engine may do either. It
;; is a module of its own because browsers without relaxed SIMD (Safari) could not compile
;; kernel.wat's NTT with it; it works on the memory of a kernel.wat instance (imported).
;; batch-kernel.ts uses it where WebAssembly.validate accepts it. Compiled by
;; scripts/build-kernel.ts into kernel-wasm.ts.
(module
  (import "kernel" "memory" (memory 1))
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
        (f64x2.relaxed_madd (local.get $B0) (local.get $vb)
          (f64x2.relaxed_madd (local.get $A0) (local.get $va) (v128.load (i32.add (local.get $r0) (local.get $o))))))
      (v128.store (i32.add (local.get $r1) (local.get $o))
        (f64x2.relaxed_madd (local.get $B1) (local.get $vb)
          (f64x2.relaxed_madd (local.get $A1) (local.get $va) (v128.load (i32.add (local.get $r1) (local.get $o))))))
      (v128.store (i32.add (local.get $r2) (local.get $o))
        (f64x2.relaxed_madd (local.get $B2) (local.get $vb)
          (f64x2.relaxed_madd (local.get $A2) (local.get $va) (v128.load (i32.add (local.get $r2) (local.get $o))))))
      (v128.store (i32.add (local.get $r3) (local.get $o))
        (f64x2.relaxed_madd (local.get $B3) (local.get $vb)
          (f64x2.relaxed_madd (local.get $A3) (local.get $va) (v128.load (i32.add (local.get $r3) (local.get $o))))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $top))))
)
