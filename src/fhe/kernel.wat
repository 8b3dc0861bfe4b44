;; The batch kernel's two multiply-add loops in WebAssembly SIMD (f64x2), about 4x the plain
;; JavaScript loops, the forward NTTs of the floods (ntt.ts), and the single-record trees'
;; gather products (gather-kernel.ts: u64 residues, i64x2 widening multiplies, Montgomery). The
;; batch loops' accumulators are float64, their inputs u32 residues or float64 squares; every
;; value is an integer below 2^53, so the sums are exact whatever the order.
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
      (br $top))))
  ;; NegacyclicNtt.forward (ntt.ts) for a prime q < 2^26 on float64 residues in [0, q): a at
  ;; byte 0, psi^bitrev(i) at byte 8n, psi^bitrev(i) / q at byte 16n. A twiddle product's
  ;; quotient is floor(b (S / q)), off by at most one, and b S - quotient q is exact (below
  ;; 2^52); every correction is a mask, so no branch depends on the data. Stages with butterfly
  ;; distance t >= 2 run two butterflies per step; the last stage (t = 1) runs one.
  (func (export "nttForward") (param $n i32) (param $q f64)
    (local $m i32) (local $t i32) (local $i i32) (local $pa i32) (local $end i32) (local $tb i32)
    (local $S v128) (local $Sq v128) (local $Q v128) (local $Z v128)
    (local $U v128) (local $B v128) (local $V v128) (local $x v128) (local $y v128)
    (local $s f64) (local $sq f64) (local $u f64) (local $b f64) (local $v f64) (local $xs f64) (local $ys f64)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Z (f64x2.splat (f64.const 0)))
    (local.set $m (i32.const 1))
    (local.set $t (i32.shr_u (local.get $n) (i32.const 1)))
    (block $stagesDone (loop $stage
      (br_if $stagesDone (i32.lt_u (local.get $t) (i32.const 2)))
      (local.set $tb (i32.shl (local.get $t) (i32.const 3)))
      (local.set $i (i32.const 0))
      (block $iDone (loop $iLoop
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $S (f64x2.splat (f64.load (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3)))))
        (local.set $Sq (f64x2.splat (f64.load (i32.shl (i32.add (i32.shl (local.get $n) (i32.const 1)) (i32.add (local.get $m) (local.get $i))) (i32.const 3)))))
        (local.set $pa (i32.shl (i32.mul (i32.shl (local.get $i) (i32.const 1)) (local.get $t)) (i32.const 3)))
        (local.set $end (i32.add (local.get $pa) (local.get $tb)))
        (block $jDone (loop $jLoop
          (br_if $jDone (i32.ge_u (local.get $pa) (local.get $end)))
          (local.set $U (v128.load (local.get $pa)))
          (local.set $B (v128.load (i32.add (local.get $pa) (local.get $tb))))
          (local.set $V (f64x2.sub (f64x2.mul (local.get $B) (local.get $S))
            (f64x2.mul (f64x2.floor (f64x2.mul (local.get $B) (local.get $Sq))) (local.get $Q))))
          (local.set $V (f64x2.add (local.get $V) (v128.and (f64x2.lt (local.get $V) (local.get $Z)) (local.get $Q))))
          (local.set $V (f64x2.sub (local.get $V) (v128.and (f64x2.ge (local.get $V) (local.get $Q)) (local.get $Q))))
          (local.set $x (f64x2.add (local.get $U) (local.get $V)))
          (local.set $y (f64x2.sub (local.get $U) (local.get $V)))
          (v128.store (local.get $pa)
            (f64x2.sub (local.get $x) (v128.and (f64x2.ge (local.get $x) (local.get $Q)) (local.get $Q))))
          (v128.store (i32.add (local.get $pa) (local.get $tb))
            (f64x2.add (local.get $y) (v128.and (f64x2.lt (local.get $y) (local.get $Z)) (local.get $Q))))
          (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
          (br $jLoop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iLoop)))
      (local.set $m (i32.shl (local.get $m) (i32.const 1)))
      (local.set $t (i32.shr_u (local.get $t) (i32.const 1)))
      (br $stage)))
    ;; t = 1: butterflies on neighbours, each with its own twiddle.
    (local.set $i (i32.const 0))
    (block $lastDone (loop $last
      (br_if $lastDone (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $s (f64.load (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))
      (local.set $sq (f64.load (i32.shl (i32.add (i32.shl (local.get $n) (i32.const 1)) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))
      (local.set $pa (i32.shl (local.get $i) (i32.const 4)))
      (local.set $u (f64.load (local.get $pa)))
      (local.set $b (f64.load offset=8 (local.get $pa)))
      (local.set $v (f64.sub (f64.mul (local.get $b) (local.get $s)) (f64.mul (f64.floor (f64.mul (local.get $b) (local.get $sq))) (local.get $q))))
      (local.set $v (select (f64.add (local.get $v) (local.get $q)) (local.get $v) (f64.lt (local.get $v) (f64.const 0))))
      (local.set $v (select (f64.sub (local.get $v) (local.get $q)) (local.get $v) (f64.ge (local.get $v) (local.get $q))))
      (local.set $xs (f64.add (local.get $u) (local.get $v)))
      (local.set $ys (f64.sub (local.get $u) (local.get $v)))
      (f64.store (local.get $pa) (select (f64.sub (local.get $xs) (local.get $q)) (local.get $xs) (f64.ge (local.get $xs) (local.get $q))))
      (f64.store offset=8 (local.get $pa) (select (f64.add (local.get $ys) (local.get $q)) (local.get $ys) (f64.lt (local.get $ys) (f64.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $last))))

  ;; High 64 bits of the 128-bit product a b, from four 32 x 32-bit products.
  (func $mulhi (param $a i64) (param $b i64) (result i64)
    (local $a0 i64) (local $a1 i64) (local $b0 i64) (local $b1 i64) (local $p01 i64) (local $p10 i64)
    (local.set $a0 (i64.and (local.get $a) (i64.const 0xffffffff)))
    (local.set $a1 (i64.shr_u (local.get $a) (i64.const 32)))
    (local.set $b0 (i64.and (local.get $b) (i64.const 0xffffffff)))
    (local.set $b1 (i64.shr_u (local.get $b) (i64.const 32)))
    (local.set $p01 (i64.mul (local.get $a0) (local.get $b1)))
    (local.set $p10 (i64.mul (local.get $a1) (local.get $b0)))
    (i64.add
      (i64.add (i64.mul (local.get $a1) (local.get $b1))
        (i64.add (i64.shr_u (local.get $p01) (i64.const 32)) (i64.shr_u (local.get $p10) (i64.const 32))))
      (i64.shr_u
        (i64.add (i64.shr_u (i64.mul (local.get $a0) (local.get $b0)) (i64.const 32))
          (i64.add (i64.and (local.get $p01) (i64.const 0xffffffff)) (i64.and (local.get $p10) (i64.const 0xffffffff))))
        (i64.const 32))))

  ;; NegacyclicNttBig.forward (ntt.ts) for a prime q < 2^61 on u64 residues in [0, q): a at byte
  ;; 0, W = psi^bitrev(i) at byte 8n, W' = floor(W 2^64 / q) at byte 16n. Shoup's product:
  ;; b W - mulhi(b, W') q lies in [0, 2q) (computed modulo 2^64), then one correction.
  (func (export "nttForward64") (param $n i32) (param $q i64)
    (local $m i32) (local $t i32) (local $i i32) (local $pa i32) (local $end i32) (local $tb i32)
    (local $w i64) (local $wp i64) (local $u i64) (local $b i64) (local $v i64) (local $x i64) (local $y i64)
    (local.set $m (i32.const 1))
    (local.set $t (i32.shr_u (local.get $n) (i32.const 1)))
    (block $stagesDone (loop $stage
      (br_if $stagesDone (i32.eqz (local.get $t)))
      (local.set $tb (i32.shl (local.get $t) (i32.const 3)))
      (local.set $i (i32.const 0))
      (block $iDone (loop $iLoop
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $w (i64.load (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))
        (local.set $wp (i64.load (i32.shl (i32.add (i32.shl (local.get $n) (i32.const 1)) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))
        (local.set $pa (i32.shl (i32.mul (i32.shl (local.get $i) (i32.const 1)) (local.get $t)) (i32.const 3)))
        (local.set $end (i32.add (local.get $pa) (local.get $tb)))
        (block $jDone (loop $jLoop
          (br_if $jDone (i32.ge_u (local.get $pa) (local.get $end)))
          (local.set $u (i64.load (local.get $pa)))
          (local.set $b (i64.load (i32.add (local.get $pa) (local.get $tb))))
          (local.set $v (i64.sub (i64.mul (local.get $b) (local.get $w)) (i64.mul (call $mulhi (local.get $b) (local.get $wp)) (local.get $q))))
          (local.set $v (select (i64.sub (local.get $v) (local.get $q)) (local.get $v) (i64.ge_u (local.get $v) (local.get $q))))
          (local.set $x (i64.add (local.get $u) (local.get $v)))
          (local.set $y (i64.sub (i64.add (local.get $u) (local.get $q)) (local.get $v)))
          (i64.store (local.get $pa) (select (i64.sub (local.get $x) (local.get $q)) (local.get $x) (i64.ge_u (local.get $x) (local.get $q))))
          (i64.store (i32.add (local.get $pa) (local.get $tb)) (select (i64.sub (local.get $y) (local.get $q)) (local.get $y) (i64.ge_u (local.get $y) (local.get $q))))
          (local.set $pa (i32.add (local.get $pa) (i32.const 8)))
          (br $jLoop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iLoop)))
      (local.set $m (i32.shl (local.get $m) (i32.const 1)))
      (local.set $t (i32.shr_u (local.get $t) (i32.const 1)))
      (br $stage))))

  ;; dst[i] = (a[i] + dst[i]) mod q for i < n: u64 residues in [0, q), q < 2^63.
  (func (export "addMod64") (param $a i32) (param $dst i32) (param $n i32) (param $q i64)
    (local $end i32) (local $x i64)
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
      (local.set $x (i64.add (i64.load (local.get $a)) (i64.load (local.get $dst))))
      (i64.store (local.get $dst) (select (i64.sub (local.get $x) (local.get $q)) (local.get $x) (i64.ge_u (local.get $x) (local.get $q))))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 8)))
      (br $top))))

  ;; The single-record gather's products (tree-slots.ts, gather-kernel.ts): sums of products of
  ;; residues kept unreduced, then one Montgomery reduction per residue.
  (global $hi (mut i64) (i64.const 0))

  ;; The 128-bit product a b: its low 64 bits, the high ones in $hi.
  (func $mul128 (param $a i64) (param $b i64) (result i64)
    (local $a0 i64) (local $a1 i64) (local $b0 i64) (local $b1 i64) (local $p00 i64) (local $p01 i64) (local $p10 i64) (local $mid i64)
    (local.set $a0 (i64.and (local.get $a) (i64.const 0xffffffff)))
    (local.set $a1 (i64.shr_u (local.get $a) (i64.const 32)))
    (local.set $b0 (i64.and (local.get $b) (i64.const 0xffffffff)))
    (local.set $b1 (i64.shr_u (local.get $b) (i64.const 32)))
    (local.set $p00 (i64.mul (local.get $a0) (local.get $b0)))
    (local.set $p01 (i64.mul (local.get $a0) (local.get $b1)))
    (local.set $p10 (i64.mul (local.get $a1) (local.get $b0)))
    (local.set $mid
      (i64.add (i64.shr_u (local.get $p00) (i64.const 32))
        (i64.add (i64.and (local.get $p01) (i64.const 0xffffffff)) (i64.and (local.get $p10) (i64.const 0xffffffff)))))
    (global.set $hi
      (i64.add (i64.mul (local.get $a1) (local.get $b1))
        (i64.add (i64.add (i64.shr_u (local.get $p01) (i64.const 32)) (i64.shr_u (local.get $p10) (i64.const 32)))
          (i64.shr_u (local.get $mid) (i64.const 32)))))
    (i64.or (i64.and (local.get $p00) (i64.const 0xffffffff)) (i64.shl (local.get $mid) (i64.const 32))))

  ;; Montgomery's reduction of T = hi 2^64 + lo < q 2^64: T 2^-64 mod q in [0, q), qinv = -q^-1 mod 2^64.
  ;; T + u q with u = lo qinv is a multiple of 2^64 whose low word carries 1 unless lo = 0.
  (func $redc (param $lo i64) (param $hi i64) (param $q i64) (param $qinv i64) (result i64)
    (local $r i64)
    (drop (call $mul128 (i64.mul (local.get $lo) (local.get $qinv)) (local.get $q)))
    (local.set $r (i64.add (i64.add (local.get $hi) (global.get $hi)) (i64.extend_i32_u (i64.ne (local.get $lo) (i64.const 0)))))
    (select (i64.sub (local.get $r) (local.get $q)) (local.get $r) (i64.ge_u (local.get $r) (local.get $q))))

  ;; a[i] = a[i] 2^64 mod q (Montgomery form) for i < n, a[i] < q: the reduction of a[i] (2^128 mod q).
  (func (export "toMontgomery") (param $a i32) (param $n i32) (param $r2 i64) (param $q i64) (param $qinv i64)
    (local $end i32) (local $lo i64)
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
      (local.set $lo (call $mul128 (i64.load (local.get $a)) (local.get $r2)))
      (i64.store (local.get $a) (call $redc (local.get $lo) (global.get $hi) (local.get $q) (local.get $qinv)))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (br $top))))

;; a[i] = a[i] c mod q for i < n, a[i] < q < 2^53, c < q: what toMontgomery computes with c =
  ;; 2^64 mod q, at a third of its work. The quotient floor(a c / q) comes from float64 (a is
  ;; exact there, c / q rounded: off by at most 2), a c - quotient q is exact modulo 2^64 and lies
  ;; in [-2q, 3q), so 2q is added and 4q, 2q and q taken off where they fit.
  (func (export "mulConstMod53") (param $a i32) (param $n i32) (param $c i64) (param $cq f64) (param $q i64)
    (local $end i32) (local $x i64) (local $r i64)
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
      (local.set $x (i64.load (local.get $a)))
      (local.set $r
        (i64.add
          (i64.sub (i64.mul (local.get $x) (local.get $c))
            (i64.mul (i64.trunc_f64_u (f64.mul (f64.convert_i64_u (local.get $x)) (local.get $cq))) (local.get $q)))
          (i64.shl (local.get $q) (i64.const 1))))
      (local.set $r (select (i64.sub (local.get $r) (i64.shl (local.get $q) (i64.const 2))) (local.get $r)
        (i64.ge_u (local.get $r) (i64.shl (local.get $q) (i64.const 2)))))
      (local.set $r (select (i64.sub (local.get $r) (i64.shl (local.get $q) (i64.const 1))) (local.get $r)
        (i64.ge_u (local.get $r) (i64.shl (local.get $q) (i64.const 1)))))
      (i64.store (local.get $a) (select (i64.sub (local.get $r) (local.get $q)) (local.get $r) (i64.ge_u (local.get $r) (local.get $q))))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (br $top))))

    ;; The products in SIMD: residues split at bit b (u32 halves lo, hi; x < 2^2b, b <= 32), a
  ;; product's three parts x_lo m_lo, x_lo m_hi + x_hi m_lo, x_hi m_hi summed in three u64
  ;; accumulators (A0, A1, A2 at acc, acc + 8n, acc + 16n) by 32 x 32 -> 64-bit widening
  ;; multiplies, four residues at a time; redcSplit puts T = A0 + A1 2^b + A2 2^2b together.

  ;; src[i] mod 2^b at lo, src[i] >> b at hi (u32) for i < n.
  (func (export "split") (param $src i32) (param $lo i32) (param $hi i32) (param $n i32) (param $b i64)
    (local $end i32) (local $x i64)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
      (local.set $x (i64.load (local.get $src)))
      (i32.store (local.get $lo) (i32.wrap_i64 (i64.and (local.get $x) (i64.sub (i64.shl (i64.const 1) (local.get $b)) (i64.const 1)))))
      (i32.store (local.get $hi) (i32.wrap_i64 (i64.shr_u (local.get $x) (local.get $b))))
      (local.set $src (i32.add (local.get $src) (i32.const 8)))
      (local.set $lo (i32.add (local.get $lo) (i32.const 4)))
      (local.set $hi (i32.add (local.get $hi) (i32.const 4)))
      (br $top))))

  ;; A0 += x_lo m_lo, A1 += x_lo m_hi + x_hi m_lo, A2 += x_hi m_hi, for i < n (n a multiple of 4).
  (func (export "macSplit") (param $xlo i32) (param $xhi i32) (param $mlo i32) (param $mhi i32) (param $acc i32) (param $n i32)
    (local $i i32) (local $a0 i32) (local $a1 i32) (local $a2 i32)
    (local $xl v128) (local $xh v128) (local $ml v128) (local $mh v128)
    (local.set $i (i32.const 0))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $xl (v128.load (i32.add (local.get $xlo) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $xh (v128.load (i32.add (local.get $xhi) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $ml (v128.load (i32.add (local.get $mlo) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $mh (v128.load (i32.add (local.get $mhi) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $a0 (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 3))))
      (local.set $a1 (i32.add (local.get $a0) (i32.shl (local.get $n) (i32.const 3))))
      (local.set $a2 (i32.add (local.get $a1) (i32.shl (local.get $n) (i32.const 3))))
      (v128.store (local.get $a0) (i64x2.add (v128.load (local.get $a0)) (i64x2.extmul_low_i32x4_u (local.get $xl) (local.get $ml))))
      (v128.store offset=16 (local.get $a0) (i64x2.add (v128.load offset=16 (local.get $a0)) (i64x2.extmul_high_i32x4_u (local.get $xl) (local.get $ml))))
      (v128.store (local.get $a1)
        (i64x2.add (v128.load (local.get $a1))
          (i64x2.add (i64x2.extmul_low_i32x4_u (local.get $xl) (local.get $mh)) (i64x2.extmul_low_i32x4_u (local.get $xh) (local.get $ml)))))
      (v128.store offset=16 (local.get $a1)
        (i64x2.add (v128.load offset=16 (local.get $a1))
          (i64x2.add (i64x2.extmul_high_i32x4_u (local.get $xl) (local.get $mh)) (i64x2.extmul_high_i32x4_u (local.get $xh) (local.get $ml)))))
      (v128.store (local.get $a2) (i64x2.add (v128.load (local.get $a2)) (i64x2.extmul_low_i32x4_u (local.get $xh) (local.get $mh))))
      (v128.store offset=16 (local.get $a2) (i64x2.add (v128.load offset=16 (local.get $a2)) (i64x2.extmul_high_i32x4_u (local.get $xh) (local.get $mh))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $top))))

  ;; out[i] = T 2^-64 mod q with T = A0 + A1 2^b + A2 2^2b < q 2^64, and A0 = A1 = A2 = 0, for i < n (16 <= b <= 32).
  (func (export "redcSplit") (param $acc i32) (param $out i32) (param $n i32) (param $q i64) (param $qinv i64) (param $b i64)
    (local $i i32) (local $p i32) (local $a1 i64) (local $a2 i64) (local $lo i64) (local $hi i64) (local $t i64)
    (local.set $i (i32.const 0))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $p (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 3))))
      (local.set $a1 (i64.load (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 3)))))
      (local.set $a2 (i64.load (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 4)))))
      (local.set $lo (i64.load (local.get $p)))
      (local.set $hi (i64.add (i64.shr_u (local.get $a1) (i64.sub (i64.const 64) (local.get $b)))
        (i64.shr_u (local.get $a2) (i64.sub (i64.const 64) (i64.shl (local.get $b) (i64.const 1))))))
      (local.set $t (i64.add (local.get $lo) (i64.shl (local.get $a1) (local.get $b))))
      (local.set $hi (i64.add (local.get $hi) (i64.extend_i32_u (i64.lt_u (local.get $t) (local.get $lo)))))
      (local.set $lo (i64.add (local.get $t) (i64.shl (local.get $a2) (i64.shl (local.get $b) (i64.const 1)))))
      (local.set $hi (i64.add (local.get $hi) (i64.extend_i32_u (i64.lt_u (local.get $lo) (local.get $t)))))
      (i64.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 3))) (call $redc (local.get $lo) (local.get $hi) (local.get $q) (local.get $qinv)))
      (i64.store (local.get $p) (i64.const 0))
      (i64.store (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 3))) (i64.const 0))
      (i64.store (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 4))) (i64.const 0))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $top))))
)
