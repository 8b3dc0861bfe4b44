;; The batch kernel's first- and second-layer loops (kernel.wat's mac4 and acc4x4) with fused multiply-adds
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
  ;; kernel.wat's acc4x4 with fused multiply-adds: d_r[i] += sum over t of w_rt s_t[i] (distinct
  ;; d_r, n even), every value an integer below 2^53.
  (func (export "acc4x4")
    (param $d0 i32) (param $d1 i32) (param $d2 i32) (param $d3 i32)
    (param $s0 i32) (param $s1 i32) (param $s2 i32) (param $s3 i32)
    (param $w00 f64) (param $w01 f64) (param $w02 f64) (param $w03 f64) (param $w10 f64) (param $w11 f64) (param $w12 f64) (param $w13 f64) (param $w20 f64) (param $w21 f64) (param $w22 f64) (param $w23 f64) (param $w30 f64) (param $w31 f64) (param $w32 f64) (param $w33 f64) (param $n i32)
    (local $i i32) (local $o i32) (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $W00 v128) (local $W01 v128) (local $W02 v128) (local $W03 v128) (local $W10 v128) (local $W11 v128) (local $W12 v128) (local $W13 v128) (local $W20 v128) (local $W21 v128) (local $W22 v128) (local $W23 v128) (local $W30 v128) (local $W31 v128) (local $W32 v128) (local $W33 v128)
    (local.set $W00 (f64x2.splat (local.get $w00))) (local.set $W01 (f64x2.splat (local.get $w01))) (local.set $W02 (f64x2.splat (local.get $w02))) (local.set $W03 (f64x2.splat (local.get $w03)))
    (local.set $W10 (f64x2.splat (local.get $w10))) (local.set $W11 (f64x2.splat (local.get $w11))) (local.set $W12 (f64x2.splat (local.get $w12))) (local.set $W13 (f64x2.splat (local.get $w13)))
    (local.set $W20 (f64x2.splat (local.get $w20))) (local.set $W21 (f64x2.splat (local.get $w21))) (local.set $W22 (f64x2.splat (local.get $w22))) (local.set $W23 (f64x2.splat (local.get $w23)))
    (local.set $W30 (f64x2.splat (local.get $w30))) (local.set $W31 (f64x2.splat (local.get $w31))) (local.set $W32 (f64x2.splat (local.get $w32))) (local.set $W33 (f64x2.splat (local.get $w33)))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $o (i32.shl (local.get $i) (i32.const 3)))
      (local.set $x0 (v128.load (i32.add (local.get $s0) (local.get $o))))
      (local.set $x1 (v128.load (i32.add (local.get $s1) (local.get $o))))
      (local.set $x2 (v128.load (i32.add (local.get $s2) (local.get $o))))
      (local.set $x3 (v128.load (i32.add (local.get $s3) (local.get $o))))
      (v128.store (i32.add (local.get $d0) (local.get $o))
        (f64x2.relaxed_madd (local.get $W03) (local.get $x3) (f64x2.relaxed_madd (local.get $W02) (local.get $x2) (f64x2.relaxed_madd (local.get $W01) (local.get $x1) (f64x2.relaxed_madd (local.get $W00) (local.get $x0) (v128.load (i32.add (local.get $d0) (local.get $o))))))))
      (v128.store (i32.add (local.get $d1) (local.get $o))
        (f64x2.relaxed_madd (local.get $W13) (local.get $x3) (f64x2.relaxed_madd (local.get $W12) (local.get $x2) (f64x2.relaxed_madd (local.get $W11) (local.get $x1) (f64x2.relaxed_madd (local.get $W10) (local.get $x0) (v128.load (i32.add (local.get $d1) (local.get $o))))))))
      (v128.store (i32.add (local.get $d2) (local.get $o))
        (f64x2.relaxed_madd (local.get $W23) (local.get $x3) (f64x2.relaxed_madd (local.get $W22) (local.get $x2) (f64x2.relaxed_madd (local.get $W21) (local.get $x1) (f64x2.relaxed_madd (local.get $W20) (local.get $x0) (v128.load (i32.add (local.get $d2) (local.get $o))))))))
      (v128.store (i32.add (local.get $d3) (local.get $o))
        (f64x2.relaxed_madd (local.get $W33) (local.get $x3) (f64x2.relaxed_madd (local.get $W32) (local.get $x2) (f64x2.relaxed_madd (local.get $W31) (local.get $x1) (f64x2.relaxed_madd (local.get $W30) (local.get $x0) (v128.load (i32.add (local.get $d3) (local.get $o))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $top))))
)
