;; The batch kernel's multiply-add loops in WebAssembly SIMD (f64x2), about 4x the plain
;; JavaScript loops, its squares and reductions, and the forward NTTs of the floods (ntt.ts);
;; the single-record trees' gather products are gather.wat's. The batch loops' accumulators are float64, their inputs u32
;; residues or float64 squares; every value is an integer below 2^53, so the sums are exact
;; whatever the order.
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
  ;; d_r[i] += w_r0 s0[i] + w_r1 s1[i] + w_r2 s2[i] + w_r3 s3[i] for four rows r, i < n (n even):
  ;; acc4 for four outputs at once (distinct d_r), each source loaded once for the four. All
  ;; float64; w_rt is $w<r><t>.
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
        (f64x2.add (v128.load (i32.add (local.get $d0) (local.get $o)))
          (f64x2.add (f64x2.add (f64x2.mul (local.get $W00) (local.get $x0)) (f64x2.mul (local.get $W01) (local.get $x1)))
                     (f64x2.add (f64x2.mul (local.get $W02) (local.get $x2)) (f64x2.mul (local.get $W03) (local.get $x3))))))
      (v128.store (i32.add (local.get $d1) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $d1) (local.get $o)))
          (f64x2.add (f64x2.add (f64x2.mul (local.get $W10) (local.get $x0)) (f64x2.mul (local.get $W11) (local.get $x1)))
                     (f64x2.add (f64x2.mul (local.get $W12) (local.get $x2)) (f64x2.mul (local.get $W13) (local.get $x3))))))
      (v128.store (i32.add (local.get $d2) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $d2) (local.get $o)))
          (f64x2.add (f64x2.add (f64x2.mul (local.get $W20) (local.get $x0)) (f64x2.mul (local.get $W21) (local.get $x1)))
                     (f64x2.add (f64x2.mul (local.get $W22) (local.get $x2)) (f64x2.mul (local.get $W23) (local.get $x3))))))
      (v128.store (i32.add (local.get $d3) (local.get $o))
        (f64x2.add (v128.load (i32.add (local.get $d3) (local.get $o)))
          (f64x2.add (f64x2.add (f64x2.mul (local.get $W30) (local.get $x0)) (f64x2.mul (local.get $W31) (local.get $x1)))
                     (f64x2.add (f64x2.mul (local.get $W32) (local.get $x2)) (f64x2.mul (local.get $W33) (local.get $x3))))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $top))))
  ;; The second layer's square of a first-layer row (batch-kernel.ts): x = a0 mod q, y = a1 mod q
  ;; (float64 sums, integers |a| < 2^53), then sq[i] = x^2, sq[n + i] = 2xy, sq[2n + i] = y^2, each
  ;; mod q, for i < n (n even): (x + y s)^2. x, y < 2^26, so 2xy < 2^53: exact.
  (func (export "squareRow") (param $a0 i32) (param $a1 i32) (param $sq i32) (param $n i32) (param $q f64)
    (local $end i32) (local $o i32) (local $Q v128) (local $Qinv v128) (local $x v128) (local $y v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $o (i32.shl (local.get $n) (i32.const 3)))
    (local.set $end (i32.add (local.get $a0) (local.get $o)))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $a0) (local.get $end)))
      (local.set $x (call $modq (v128.load (local.get $a0)) (local.get $Q) (local.get $Qinv)))
      (local.set $y (call $modq (v128.load (local.get $a1)) (local.get $Q) (local.get $Qinv)))
      (v128.store (local.get $sq) (call $modq (f64x2.mul (local.get $x) (local.get $x)) (local.get $Q) (local.get $Qinv)))
      (v128.store (i32.add (local.get $sq) (local.get $o))
        (call $modq (f64x2.mul (f64x2.add (local.get $x) (local.get $x)) (local.get $y)) (local.get $Q) (local.get $Qinv)))
      (v128.store (i32.add (local.get $sq) (i32.shl (local.get $o) (i32.const 1)))
        (call $modq (f64x2.mul (local.get $y) (local.get $y)) (local.get $Q) (local.get $Qinv)))
      (local.set $a0 (i32.add (local.get $a0) (i32.const 16)))
      (local.set $a1 (i32.add (local.get $a1) (i32.const 16)))
      (local.set $sq (i32.add (local.get $sq) (i32.const 16)))
      (br $top))))
  ;; The layers after the second (batch-kernel-deep.ts) on float64 residues in [0, q), q < 2^26.
  ;; dst[i] = (dst[i] + f a[i] b[i]) mod q for i < n (n even), f = 1 or 2: a term of a square.
  ;; f a b < 2^53 and dst + (f a b mod q) < 2q: exact.
  (func (export "squareAdd") (param $dst i32) (param $a i32) (param $b i32) (param $f f64) (param $n i32) (param $q f64)
    (local $end i32) (local $F v128) (local $Q v128) (local $Qinv v128)
    (local.set $F (f64x2.splat (local.get $f)))
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
      (v128.store (local.get $dst)
        (call $fold
          (f64x2.add (v128.load (local.get $dst))
            (call $modq (f64x2.mul (local.get $F) (f64x2.mul (v128.load (local.get $a)) (v128.load (local.get $b)))) (local.get $Q) (local.get $Qinv)))
          (local.get $Q)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $a (i32.add (local.get $a) (i32.const 16)))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (br $top))))
  ;; x[i] = (x[i] mod q + c) mod q for i < n (n even): integers |x[i]| < 2^53 (sums of signed
  ;; weights times residues), c in [0, q).
  (func (export "reduceAdd") (param $x i32) (param $n i32) (param $q f64) (param $c f64)
    (local $end i32) (local $C v128) (local $Q v128) (local $Qinv v128)
    (local.set $C (f64x2.splat (local.get $c)))
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
      (v128.store (local.get $x)
        (call $fold (f64x2.add (call $modq (v128.load (local.get $x)) (local.get $Q) (local.get $Qinv)) (local.get $C)) (local.get $Q)))
      (local.set $x (i32.add (local.get $x) (i32.const 16)))
      (br $top))))

  ;; NegacyclicNtt.forward (ntt.ts) for a prime q < 2^26 on float64 residues in [0, q): a at
  ;; byte $a, psi^bitrev(i) at byte $tab, psi^bitrev(i) / q at byte $tab + 8n; n >= 4. Values are
  ;; signed integers, reduced lazily. A twiddle product is V = B S - round(B S / q) q, with the
  ;; quotient estimated as round(B (S / q)) (off by one at most within 2^-24 of a half), so
  ;; |V| <= q/2 + 2; the butterfly's U + V and U - V grow by that per stage, and every third stage
  ;; (and the last) brings them back to |x| <= q/2 + 1 the same way. The largest multiplicand is
  ;; then 2q + 4 (two stages after a reduction), and (2q + 4) q < 2^53 for q < 2^26: every product
  ;; and difference is exact in float64. The last stage (t = 1) runs two butterflies per step too,
  ;; and maps the results into [0, q).
  (func $ntt (export "nttForwardAt") (param $n i32) (param $q f64) (param $a i32) (param $tab i32)
    (local $m i32) (local $t i32) (local $i i32) (local $pa i32) (local $end i32) (local $tb i32) (local $stage i32) (local $reduce i32)
    (local $S v128) (local $Sq v128) (local $Q v128) (local $Qinv v128) (local $Z v128)
    (local $U v128) (local $B v128) (local $V v128) (local $x v128) (local $y v128) (local $v0 v128) (local $v1 v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $Z (f64x2.splat (f64.const 0)))
    (local.set $m (i32.const 1))
    (local.set $t (i32.shr_u (local.get $n) (i32.const 1)))
    (local.set $stage (i32.const 1))
    (block $stagesDone (loop $stage
      (br_if $stagesDone (i32.lt_u (local.get $t) (i32.const 2)))
      (local.set $reduce (i32.eqz (i32.rem_u (local.get $stage) (i32.const 3))))
      (local.set $tb (i32.shl (local.get $t) (i32.const 3)))
      (local.set $i (i32.const 0))
      (block $iDone (loop $iLoop
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $S (f64x2.splat (f64.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $m) (local.get $i)) (i32.const 3))))))
        (local.set $Sq (f64x2.splat (f64.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))))
        (local.set $pa (i32.add (local.get $a) (i32.shl (i32.mul (i32.shl (local.get $i) (i32.const 1)) (local.get $t)) (i32.const 3))))
        (local.set $end (i32.add (local.get $pa) (local.get $tb)))
        (block $jDone (loop $jLoop
          (br_if $jDone (i32.ge_u (local.get $pa) (local.get $end)))
          (local.set $U (v128.load (local.get $pa)))
          (local.set $B (v128.load (i32.add (local.get $pa) (local.get $tb))))
          (local.set $V (f64x2.sub (f64x2.mul (local.get $B) (local.get $S))
            (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $B) (local.get $Sq))) (local.get $Q))))
          (local.set $x (f64x2.add (local.get $U) (local.get $V)))
          (local.set $y (f64x2.sub (local.get $U) (local.get $V)))
          (if (local.get $reduce) (then
            (local.set $x (call $centered (local.get $x) (local.get $Q) (local.get $Qinv)))
            (local.set $y (call $centered (local.get $y) (local.get $Q) (local.get $Qinv)))))
          (v128.store (local.get $pa) (local.get $x))
          (v128.store (i32.add (local.get $pa) (local.get $tb)) (local.get $y))
          (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
          (br $jLoop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iLoop)))
      (local.set $m (i32.shl (local.get $m) (i32.const 1)))
      (local.set $t (i32.shr_u (local.get $t) (i32.const 1)))
      (local.set $stage (i32.add (local.get $stage) (i32.const 1)))
      (br $stage)))
    ;; t = 1: butterflies on neighbours (a[2i], a[2i + 1]), twiddle i; two per step.
    (local.set $i (i32.const 0))
    (local.set $pa (local.get $a))
    (block $lastDone (loop $last
      (br_if $lastDone (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $v0 (v128.load (local.get $pa)))
      (local.set $v1 (v128.load offset=16 (local.get $pa)))
      (local.set $U (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $v0) (local.get $v1)))
      (local.set $B (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $v0) (local.get $v1)))
      (local.set $S (v128.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $m) (local.get $i)) (i32.const 3)))))
      (local.set $Sq (v128.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3)))))
      (local.set $V (f64x2.sub (f64x2.mul (local.get $B) (local.get $S))
        (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $B) (local.get $Sq))) (local.get $Q))))
      (local.set $x (call $centered (f64x2.add (local.get $U) (local.get $V)) (local.get $Q) (local.get $Qinv)))
      (local.set $y (call $centered (f64x2.sub (local.get $U) (local.get $V)) (local.get $Q) (local.get $Qinv)))
      (local.set $x (f64x2.add (local.get $x) (v128.and (f64x2.lt (local.get $x) (local.get $Z)) (local.get $Q))))
      (local.set $y (f64x2.add (local.get $y) (v128.and (f64x2.lt (local.get $y) (local.get $Z)) (local.get $Q))))
      (v128.store (local.get $pa) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $x) (local.get $y)))
      (v128.store offset=16 (local.get $pa) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $x) (local.get $y)))
      (local.set $pa (i32.add (local.get $pa) (i32.const 32)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $last))))

  ;; x - round(x / q) q for integers |x| < 2^52 (f64x2 lanes): |result| <= q/2 + 1, exact.
  (func $centered (param $x v128) (param $Q v128) (param $Qinv v128) (result v128)
    (f64x2.sub (local.get $x) (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $x) (local.get $Qinv))) (local.get $Q))))

  ;; nttForwardAt with a at byte 0 and the tables after it (NegacyclicNtt's own instances).
  (func (export "nttForward") (param $n i32) (param $q f64)
    (call $ntt (local.get $n) (local.get $q) (i32.const 0) (i32.shl (local.get $n) (i32.const 3))))

  ;; r mod q for r in (-q, 2q) (f64x2 lanes): one subtraction or addition of q, by masks.
  (func $fold (param $r v128) (param $Q v128) (result v128)
    (f64x2.sub
      (f64x2.add (local.get $r) (v128.and (f64x2.lt (local.get $r) (f64x2.splat (f64.const 0))) (local.get $Q)))
      (v128.and (f64x2.ge (local.get $r) (local.get $Q)) (local.get $Q))))

  ;; x mod q for integers 0 <= |x| < 2^53 (f64x2 lanes): the quotient estimate floor(x / q) is off
  ;; by at most one, x - k q is exact, and $fold corrects it.
  (func $modq (param $x v128) (param $Q v128) (param $Qinv v128) (result v128)
    (call $fold
      (f64x2.sub (local.get $x) (f64x2.mul (f64x2.floor (f64x2.mul (local.get $x) (local.get $Qinv))) (local.get $Q)))
      (local.get $Q)))

  ;; Seeded batch encryption (seeded-batch.ts), the message's residues modulo one prime q < 2^26,
  ;; plus the noise: hat[i] = ((hi[i] mod q) 2^32 + m[i] + e[i]) mod q, in [0, q), for i < n (even).
  ;; m, hi: float64 (m[i] + hi[i] 2^32 is the coefficient; |m[i]| < 2^52 and |hi[i]| < 2^52),
  ;; e: int32 in (-q, q); $base = 2^32 mod q. Every step stays below 2^53: exact.
  (func (export "messageResidues") (param $n i32) (param $q f64) (param $base f64) (param $m i32) (param $hi i32) (param $e i32) (param $hat i32)
    (local $end i32) (local $Q v128) (local $Qinv v128) (local $h v128) (local $x v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $end (i32.add (local.get $m) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $m) (local.get $end)))
      (local.set $h (call $modq (v128.load (local.get $hi)) (local.get $Q) (local.get $Qinv)))
      (local.set $x (call $modq
        (f64x2.add (v128.load (local.get $m)) (f64x2.mul (local.get $h) (f64x2.splat (local.get $base))))
        (local.get $Q) (local.get $Qinv)))
      (v128.store (local.get $hat)
        (call $fold (f64x2.add (local.get $x) (f64x2.convert_low_i32x4_s (v128.load64_zero (local.get $e)))) (local.get $Q)))
      (local.set $m (i32.add (local.get $m) (i32.const 16)))
      (local.set $hi (i32.add (local.get $hi) (i32.const 16)))
      (local.set $e (i32.add (local.get $e) (i32.const 8)))
      (local.set $hat (i32.add (local.get $hat) (i32.const 16)))
      (br $next))))

  ;; The rest of a seeded encryption modulo q: hat to NTT form (tables at $tab), then
  ;; c[i] = (hat[i] - a[i] s[i]) mod q over a's u32 residues, written over them (n even).
  (func (export "subtractAS") (param $n i32) (param $q f64) (param $hat i32) (param $tab i32) (param $a i32) (param $s i32)
    (local $end i32) (local $Q v128) (local $Qinv v128) (local $as v128)
    (call $ntt (local.get $n) (local.get $q) (local.get $hat) (local.get $tab))
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
      ;; a s < 2^52: exact
      (local.set $as (call $modq
        (f64x2.mul (f64x2.convert_low_i32x4_u (v128.load64_zero (local.get $a))) (f64x2.convert_low_i32x4_u (v128.load64_zero (local.get $s))))
        (local.get $Q) (local.get $Qinv)))
      (v128.store64_lane 0 (local.get $a)
        (i32x4.trunc_sat_f64x2_u_zero (call $fold (f64x2.sub (v128.load (local.get $hat)) (local.get $as)) (local.get $Q))))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (local.set $s (i32.add (local.get $s) (i32.const 8)))
      (local.set $hat (i32.add (local.get $hat) (i32.const 16)))
      (br $next))))

  ;; Seeded encryption's uniform half (seeded-batch.ts expandUniform) modulo one prime q < 2^26:
  ;; ChaCha20's u32 words from byte $w ($nw of them) into residues from byte $out, at most $n. A
  ;; word below $limit (the largest multiple of q under 2^32, passed as i32: compared unsigned)
  ;; is kept and reduced mod q (exact in float64, $modq); the others are skipped. Four words at a
  ;; time while none of them is skipped and four more residues are wanted, else one: so it stops
  ;; on the word that gives the n-th residue, as the JavaScript loop did. Returns (words read,
  ;; residues written).
  (func (export "uniformResidues") (param $w i32) (param $nw i32) (param $out i32) (param $n i32) (param $q f64) (param $limit i32) (result i32 i32)
    (local $w0 i32) (local $o0 i32) (local $wEnd i32) (local $oEnd i32) (local $word i32)
    (local $x v128) (local $L v128) (local $Q v128) (local $Qinv v128) (local $lo v128) (local $hi v128)
    (local.set $w0 (local.get $w))
    (local.set $o0 (local.get $out))
    (local.set $wEnd (i32.add (local.get $w) (i32.shl (local.get $nw) (i32.const 2))))
    (local.set $oEnd (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $L (i32x4.splat (local.get $limit)))
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $w) (local.get $wEnd)))
      (br_if $done (i32.ge_u (local.get $out) (local.get $oEnd)))
      (block $one
        (br_if $one (i32.gt_u (i32.add (local.get $w) (i32.const 16)) (local.get $wEnd)))
        (br_if $one (i32.gt_u (i32.add (local.get $out) (i32.const 16)) (local.get $oEnd)))
        (local.set $x (v128.load (local.get $w)))
        (br_if $one (v128.any_true (i32x4.ge_u (local.get $x) (local.get $L))))
        (local.set $lo (i32x4.trunc_sat_f64x2_u_zero
          (call $modq (f64x2.convert_low_i32x4_u (local.get $x)) (local.get $Q) (local.get $Qinv))))
        (local.set $hi (i32x4.trunc_sat_f64x2_u_zero
          (call $modq (f64x2.convert_low_i32x4_u (i8x16.shuffle 8 9 10 11 12 13 14 15 8 9 10 11 12 13 14 15 (local.get $x) (local.get $x))) (local.get $Q) (local.get $Qinv))))
        (v128.store (local.get $out) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $lo) (local.get $hi)))
        (local.set $w (i32.add (local.get $w) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $next))
      (local.set $word (i32.load (local.get $w)))
      (local.set $w (i32.add (local.get $w) (i32.const 4)))
      (if (i32.lt_u (local.get $word) (local.get $limit)) (then
        (i32.store (local.get $out) (i32x4.extract_lane 0 (i32x4.trunc_sat_f64x2_u_zero
          (call $modq (f64x2.splat (f64.convert_i32_u (local.get $word))) (local.get $Q) (local.get $Qinv)))))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))))
      (br $next)))
    (i32.shr_u (i32.sub (local.get $w) (local.get $w0)) (i32.const 2))
    (i32.shr_u (i32.sub (local.get $out) (local.get $o0)) (i32.const 2)))

  ;; NegacyclicNtt.inverse (ntt.ts) for a prime q < 2^26 on float64 residues in [0, q): a at
  ;; byte $a, psi^-bitrev(i) at byte $tab, psi^-bitrev(i) / q at byte $tab + 8n; $ninv = n^-1 mod
  ;; q; n >= 4. Gentleman-Sande butterflies (U + V, (U - V) S), the first stage (t = 1, on
  ;; neighbours) two per step as nttForwardAt's last. Every stage brings U + V back to
  ;; |x| <= q/2 + 1 and the twiddle product is |V| <= q/2 + 2 (as in nttForwardAt), so the next
  ;; stage's U - V is below q + 4 and (q + 4) q < 2^53: exact. The result is in [0, q).
  (func (export "nttInverseAt") (param $n i32) (param $q f64) (param $a i32) (param $tab i32) (param $ninv f64)
    (local $m i32) (local $t i32) (local $i i32) (local $pa i32) (local $end i32) (local $tb i32)
    (local $S v128) (local $Sq v128) (local $Q v128) (local $Qinv v128) (local $Z v128)
    (local $U v128) (local $B v128) (local $x v128) (local $y v128) (local $v0 v128) (local $v1 v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $Z (f64x2.splat (f64.const 0)))
    (local.set $m (i32.shr_u (local.get $n) (i32.const 1)))
    (local.set $i (i32.const 0))
    (local.set $pa (local.get $a))
    (block $firstDone (loop $first
      (br_if $firstDone (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $v0 (v128.load (local.get $pa)))
      (local.set $v1 (v128.load offset=16 (local.get $pa)))
      (local.set $U (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $v0) (local.get $v1)))
      (local.set $B (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $v0) (local.get $v1)))
      (local.set $S (v128.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $m) (local.get $i)) (i32.const 3)))))
      (local.set $Sq (v128.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3)))))
      (local.set $x (call $centered (f64x2.add (local.get $U) (local.get $B)) (local.get $Q) (local.get $Qinv)))
      (local.set $y (f64x2.sub (local.get $U) (local.get $B)))
      (local.set $y (f64x2.sub (f64x2.mul (local.get $y) (local.get $S))
        (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $y) (local.get $Sq))) (local.get $Q))))
      (v128.store (local.get $pa) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $x) (local.get $y)))
      (v128.store offset=16 (local.get $pa) (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $x) (local.get $y)))
      (local.set $pa (i32.add (local.get $pa) (i32.const 32)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $first)))
    (local.set $m (i32.shr_u (local.get $m) (i32.const 1)))
    (local.set $t (i32.const 2))
    (block $stagesDone (loop $stage
      (br_if $stagesDone (i32.eqz (local.get $m)))
      (local.set $tb (i32.shl (local.get $t) (i32.const 3)))
      (local.set $i (i32.const 0))
      (block $iDone (loop $iLoop
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $S (f64x2.splat (f64.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $m) (local.get $i)) (i32.const 3))))))
        (local.set $Sq (f64x2.splat (f64.load (i32.add (local.get $tab) (i32.shl (i32.add (local.get $n) (i32.add (local.get $m) (local.get $i))) (i32.const 3))))))
        (local.set $pa (i32.add (local.get $a) (i32.shl (i32.mul (i32.shl (local.get $i) (i32.const 1)) (local.get $t)) (i32.const 3))))
        (local.set $end (i32.add (local.get $pa) (local.get $tb)))
        (block $jDone (loop $jLoop
          (br_if $jDone (i32.ge_u (local.get $pa) (local.get $end)))
          (local.set $U (v128.load (local.get $pa)))
          (local.set $B (v128.load (i32.add (local.get $pa) (local.get $tb))))
          (local.set $y (f64x2.sub (local.get $U) (local.get $B)))
          (v128.store (local.get $pa) (call $centered (f64x2.add (local.get $U) (local.get $B)) (local.get $Q) (local.get $Qinv)))
          (v128.store (i32.add (local.get $pa) (local.get $tb))
            (f64x2.sub (f64x2.mul (local.get $y) (local.get $S))
              (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $y) (local.get $Sq))) (local.get $Q))))
          (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
          (br $jLoop)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iLoop)))
      (local.set $m (i32.shr_u (local.get $m) (i32.const 1)))
      (local.set $t (i32.shl (local.get $t) (i32.const 1)))
      (br $stage)))
    ;; Times n^-1, into [0, q).
    (local.set $S (f64x2.splat (local.get $ninv)))
    (local.set $Sq (f64x2.splat (f64.div (local.get $ninv) (local.get $q))))
    (local.set $pa (local.get $a))
    (local.set $end (i32.add (local.get $a) (i32.shl (local.get $n) (i32.const 3))))
    (block $scaled (loop $scale
      (br_if $scaled (i32.ge_u (local.get $pa) (local.get $end)))
      (local.set $U (v128.load (local.get $pa)))
      (local.set $x (f64x2.sub (f64x2.mul (local.get $U) (local.get $S))
        (f64x2.mul (f64x2.nearest (f64x2.mul (local.get $U) (local.get $Sq))) (local.get $Q))))
      (v128.store (local.get $pa) (f64x2.add (local.get $x) (v128.and (f64x2.lt (local.get $x) (local.get $Z)) (local.get $Q))))
      (local.set $pa (i32.add (local.get $pa) (i32.const 16)))
      (br $scale))))

  ;; Rescaling (rescale.ts), step 3, the kept prime's new residues: dst[j] = (src[j] - t[j]) $inv mod q, src and dst u32
  ;; residues in [0, q), t float64 in [0, q) (the term in NTT form), $inv = D^-1 mod q; n even.
  ;; (src - t) + q < 2q and times $inv below 2^53: exact.
  (func (export "rescaleApply") (param $n i32) (param $q f64) (param $src i32) (param $t i32) (param $inv f64) (param $dst i32)
    (local $end i32) (local $Q v128) (local $Qinv v128) (local $d v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
      (local.set $d (call $fold (f64x2.sub (f64x2.convert_low_i32x4_u (v128.load64_zero (local.get $src))) (v128.load (local.get $t))) (local.get $Q)))
      (v128.store64_lane 0 (local.get $dst)
        (i32x4.trunc_sat_f64x2_u_zero (call $modq (f64x2.mul (local.get $d) (f64x2.splat (local.get $inv))) (local.get $Q) (local.get $Qinv))))
      (local.set $src (i32.add (local.get $src) (i32.const 8)))
      (local.set $t (i32.add (local.get $t) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 8)))
      (br $next))))

  ;; Rescaling by a product of primes (rescale.ts, ProductRescale), step 1: the k arrays of n
  ;; float64 at $y hold A mod d_j (coefficients, in [0, d_j)); they become Garner's mixed-radix
  ;; digits of (A + floor(D/2)) mod D, in place. $c holds, per digit j, 3 + k float64: d_j, 1/d_j,
  ;; the digit h_j of floor(D/2), then d_l^-1 mod d_j for l < j. Every product is of two values
  ;; below 2^26: exact. n even. Digit by digit over all coefficients (a digit reads the final
  ;; digits before it), so that each pass keeps its constants in registers: a division per
  ;; coefficient and digit (1/d_j) made this loop cost four inverse transforms.
  (func (export "garnerDigits") (param $n i32) (param $k i32) (param $y i32) (param $c i32)
    (local $i i32) (local $j i32) (local $l i32) (local $cj i32) (local $t v128) (local $D v128) (local $Dinv v128)
    (local $carry v128) (local $v v128) (local $Z v128) (local $W v128) (local $yj i32) (local $yl i32) (local $end i32)
    (local.set $Z (f64x2.splat (f64.const 0)))
    ;; t_j = (((r_j - v_0) inv_0j - v_1) inv_1j - ...) mod d_j, for l < j in turn over all coefficients
    (local.set $j (i32.const 1))
    (block $digitsDone (loop $digit
      (br_if $digitsDone (i32.ge_u (local.get $j) (local.get $k)))
      (local.set $cj (i32.add (local.get $c) (i32.shl (i32.mul (local.get $j) (i32.add (local.get $k) (i32.const 3))) (i32.const 3))))
      (local.set $D (f64x2.splat (f64.load (local.get $cj))))
      (local.set $Dinv (f64x2.splat (f64.load offset=8 (local.get $cj))))
      (local.set $yj (i32.add (local.get $y) (i32.shl (i32.mul (local.get $j) (local.get $n)) (i32.const 3))))
      (local.set $end (i32.add (local.get $yj) (i32.shl (local.get $n) (i32.const 3))))
      (local.set $l (i32.const 0))
      (block $termsDone (loop $term
        (br_if $termsDone (i32.ge_u (local.get $l) (local.get $j)))
        (local.set $W (f64x2.splat (f64.load (i32.add (local.get $cj) (i32.shl (i32.add (local.get $l) (i32.const 3)) (i32.const 3))))))
        (local.set $yl (i32.add (local.get $y) (i32.shl (i32.mul (local.get $l) (local.get $n)) (i32.const 3))))
        (local.set $i (local.get $yj))
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
          ;; v_l < d_l < 2^26 < 2 d_j: one conditional subtraction makes it v_l mod d_j.
          (local.set $v (v128.load (local.get $yl)))
          (local.set $v (f64x2.sub (local.get $v) (v128.and (f64x2.ge (local.get $v) (local.get $D)) (local.get $D))))
          (local.set $t (f64x2.sub (v128.load (local.get $i)) (local.get $v)))
          (local.set $t (f64x2.add (local.get $t) (v128.and (f64x2.lt (local.get $t) (local.get $Z)) (local.get $D))))
          (local.set $t (f64x2.mul (local.get $t) (local.get $W)))
          (local.set $t (f64x2.sub (local.get $t) (f64x2.mul (f64x2.floor (f64x2.mul (local.get $t) (local.get $Dinv))) (local.get $D))))
          (local.set $t (f64x2.add (local.get $t) (v128.and (f64x2.lt (local.get $t) (local.get $Z)) (local.get $D))))
          (v128.store (local.get $i) (f64x2.sub (local.get $t) (v128.and (f64x2.ge (local.get $t) (local.get $D)) (local.get $D))))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (local.set $yl (i32.add (local.get $yl) (i32.const 16)))
          (br $next)))
        (local.set $l (i32.add (local.get $l) (i32.const 1)))
        (br $term)))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $digit)))
    ;; + floor(D/2), digit by digit with carries (the last one dropped: modulo D)
    (local.set $i (i32.const 0))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $carry (local.get $Z))
      (local.set $j (i32.const 0))
      (block $addDone (loop $add
        (br_if $addDone (i32.ge_u (local.get $j) (local.get $k)))
        (local.set $cj (i32.add (local.get $c) (i32.shl (i32.mul (local.get $j) (i32.add (local.get $k) (i32.const 3))) (i32.const 3))))
        (local.set $D (f64x2.splat (f64.load (local.get $cj))))
        (local.set $yj (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $j) (local.get $n)) (local.get $i)) (i32.const 3))))
        (local.set $t (f64x2.add (f64x2.add (v128.load (local.get $yj)) (f64x2.splat (f64.load offset=16 (local.get $cj)))) (local.get $carry)))
        (local.set $carry (v128.and (f64x2.ge (local.get $t) (local.get $D)) (f64x2.splat (f64.const 1))))
        (v128.store (local.get $yj) (f64x2.sub (local.get $t) (f64x2.mul (local.get $carry) (local.get $D))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $add)))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $next))))

  ;; Rescaling by a product of primes D = d_0 ... d_(k-1) (rescale.ts, ProductRescale), the term
  ;; of one kept prime q: out[j] = (sum_l y_l[j] w_l + $neg) mod q, with y_l the mixed-radix digits
  ;; of (A + floor(D/2)) mod D (float64, below 2^26, k arrays of n from $y), w_l = d_0 ... d_(l-1)
  ;; mod q, centered (|w_l| < 2^25; float64, k from $w) and $neg = q - (floor(D/2) mod q). Each
  ;; product is below 2^51 in magnitude, so four of them and a reduced value sum exactly (below
  ;; 2^53): reduced once per four digits, not once per product. n even.
  (func (export "rescaleTermDigits") (param $n i32) (param $q f64) (param $y i32) (param $k i32) (param $w i32) (param $neg f64) (param $out i32)
    (local $c i32) (local $l i32) (local $Q v128) (local $Qinv v128) (local $acc v128)
    (local.set $Q (f64x2.splat (local.get $q)))
    (local.set $Qinv (f64x2.splat (f64.div (f64.const 1) (local.get $q))))
    (local.set $c (i32.const 0))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $c) (local.get $n)))
      (local.set $acc (f64x2.splat (local.get $neg)))
      (local.set $l (i32.const 0))
      (block $digitsDone (loop $digit
        (br_if $digitsDone (i32.ge_u (local.get $l) (local.get $k)))
        (local.set $acc (f64x2.add (local.get $acc)
          (f64x2.mul
            (v128.load (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $l) (local.get $n)) (local.get $c)) (i32.const 3))))
            (f64x2.splat (f64.load (i32.add (local.get $w) (i32.shl (local.get $l) (i32.const 3))))))))
        (if (i32.eq (i32.and (local.get $l) (i32.const 3)) (i32.const 3)) (then
          (local.set $acc (call $modq (local.get $acc) (local.get $Q) (local.get $Qinv)))))
        (local.set $l (i32.add (local.get $l) (i32.const 1)))
        (br $digit)))
      (v128.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 3))) (call $modq (local.get $acc) (local.get $Q) (local.get $Qinv)))
      (local.set $c (i32.add (local.get $c) (i32.const 2)))
      (br $next))))

  ;; Residues between the kernel's float64 lanes and u32 arrays (batch-kernel-deep.ts): dst[i] = src[i]
  ;; for i < n (even), the values integers in [0, 2^32). A JavaScript loop converting element by
  ;; element cost a LeNet batch's server ~2 s (layersAfterRescale, --cpu-prof).
  (func (export "u32ToF64") (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
      (v128.store (local.get $dst) (f64x2.convert_low_i32x4_u (v128.load64_zero (local.get $src))))
      (local.set $src (i32.add (local.get $src) (i32.const 8)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (br $next))))

  (func (export "f64ToU32") (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
      (v128.store64_lane 0 (local.get $dst) (i32x4.trunc_sat_f64x2_u_zero (v128.load (local.get $src))))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 8)))
      (br $next))))

  ;; Residues below 2^26 packed four to 13 bytes (raw-ciphertext.ts' pack4x26 bit order: 104
  ;; bits, little-endian, residue i at bit 26 i): u32 residues from byte $src, $n of them (a
  ;; multiple of 4), into bytes from $dst. Two 64-bit words per group instead of 13 byte stores:
  ;; a LeNet query's 729 x 17 x 32768 residues cost the client's threads ~0.9 ms a ciphertext in
  ;; JavaScript.
  (func (export "pack26") (param $src i32) (param $n i32) (param $dst i32)
    (local $end i32) (local $x2 i64) (local $hi i64)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
      (local.set $x2 (i64.load32_u offset=8 (local.get $src)))
      (i64.store (local.get $dst)
        (i64.or (i64.or (i64.load32_u (local.get $src)) (i64.shl (i64.load32_u offset=4 (local.get $src)) (i64.const 26)))
          (i64.shl (local.get $x2) (i64.const 52))))
      (local.set $hi (i64.or (i64.shr_u (local.get $x2) (i64.const 12)) (i64.shl (i64.load32_u offset=12 (local.get $src)) (i64.const 14))))
      (i64.store32 offset=8 (local.get $dst) (local.get $hi))
      (i64.store8 offset=12 (local.get $dst) (i64.shr_u (local.get $hi) (i64.const 32)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 13)))
      (br $next))))

  ;; unpack26's running maxima: of the words (their high halves' largest is that of the words'
  ;; largest) and of the words shifted up by 32 (the low halves').
  (global $maxHigh (mut i64) (i64.const 0))
  (global $maxLow (mut i64) (i64.const 0))
  (func $max2 (param $x i64)
    (local $y i64)
    (global.set $maxHigh (select (local.get $x) (global.get $maxHigh) (i64.gt_u (local.get $x) (global.get $maxHigh))))
    (local.set $y (i64.shl (local.get $x) (i64.const 32)))
    (global.set $maxLow (select (local.get $y) (global.get $maxLow) (i64.gt_u (local.get $y) (global.get $maxLow)))))

  ;; pack26's inverse: $n residues (a multiple of 4) from the packed bytes at $src into u32s from
  ;; $dst. Returns the largest residue, which the caller compares with the prime (a residue at or
  ;; above it is refused: SEAL's load refuses it too).
  (func (export "unpack26") (param $src i32) (param $n i32) (param $dst i32) (result i32)
    (local $end i32) (local $lo i64) (local $hi i64) (local $x i64)
    (global.set $maxHigh (i64.const 0))
    (global.set $maxLow (i64.const 0))
    (local.set $end (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
      (local.set $lo (i64.load (local.get $src)))
      (local.set $hi (i64.or (i64.load32_u offset=8 (local.get $src)) (i64.shl (i64.load8_u offset=12 (local.get $src)) (i64.const 32))))
      ;; Four residues in the two halves of two words: (x0 | x1 << 32) and (x2 | x3 << 32).
      (local.set $x (i64.or (i64.and (local.get $lo) (i64.const 0x3ffffff))
        (i64.shl (i64.and (i64.shr_u (local.get $lo) (i64.const 26)) (i64.const 0x3ffffff)) (i64.const 32))))
      (i64.store (local.get $dst) (local.get $x))
      (call $max2 (local.get $x))
      (local.set $x (i64.or (i64.and (i64.or (i64.shr_u (local.get $lo) (i64.const 52)) (i64.shl (local.get $hi) (i64.const 12))) (i64.const 0x3ffffff))
        (i64.shl (i64.shr_u (local.get $hi) (i64.const 14)) (i64.const 32))))
      (i64.store offset=8 (local.get $dst) (local.get $x))
      (call $max2 (local.get $x))
      (local.set $src (i32.add (local.get $src) (i32.const 13)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (br $next)))
    (local.set $lo (i64.shr_u (global.get $maxLow) (i64.const 32)))
    (local.set $hi (i64.shr_u (global.get $maxHigh) (i64.const 32)))
    (i32.wrap_i64 (select (local.get $hi) (local.get $lo) (i64.gt_u (local.get $hi) (local.get $lo)))))

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

  ;; x w mod q in [0, q) for any x < 2^64, w < q < 2^63, wp = floor(w 2^64 / q): Shoup's product
  ;; x w - mulhi(x, wp) q lies in [0, 2q) (computed modulo 2^64), then one correction.
  (func $shoup (param $x i64) (param $w i64) (param $wp i64) (param $q i64) (result i64)
    (local $v i64)
    (local.set $v (i64.sub (i64.mul (local.get $x) (local.get $w)) (i64.mul (call $mulhi (local.get $x) (local.get $wp)) (local.get $q))))
    (select (i64.sub (local.get $v) (local.get $q)) (local.get $v) (i64.ge_u (local.get $v) (local.get $q))))

  ;; The flood's residues modulo one prime q < 2^61 (flood-wide.ts): at $at, per coefficient, the
  ;; positive terms' sum P and the negative terms' |sum| M, each $limbs u64 limbs (least
  ;; significant first); at $tab, per limb j, c_j = 2^(64 j) mod q and floor(c_j 2^64 / q). Writes
  ;; (P - M) mod q, in [0, q), as u64 at $out.
  (func (export "floodResidues64") (param $at i32) (param $n i32) (param $limbs i32) (param $q i64) (param $tab i32) (param $out i32)
    (local $end i32) (local $j i32) (local $t i32) (local $p i64) (local $m i64) (local $x i64)
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $coef
      (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
      (local.set $p (i64.const 0))
      (local.set $m (i64.const 0))
      (local.set $j (i32.const 0))
      (local.set $t (local.get $tab))
      (block $limbsDone (loop $limb
        (br_if $limbsDone (i32.ge_u (local.get $j) (local.get $limbs)))
        (local.set $x (i64.add (local.get $p)
          (call $shoup (i64.load (local.get $at)) (i64.load (local.get $t)) (i64.load offset=8 (local.get $t)) (local.get $q))))
        (local.set $p (select (i64.sub (local.get $x) (local.get $q)) (local.get $x) (i64.ge_u (local.get $x) (local.get $q))))
        (local.set $x (i64.add (local.get $m)
          (call $shoup (i64.load (i32.add (local.get $at) (i32.shl (local.get $limbs) (i32.const 3)))) (i64.load (local.get $t)) (i64.load offset=8 (local.get $t)) (local.get $q))))
        (local.set $m (select (i64.sub (local.get $x) (local.get $q)) (local.get $x) (i64.ge_u (local.get $x) (local.get $q))))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (local.set $t (i32.add (local.get $t) (i32.const 16)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $limb)))
      ;; past this coefficient's M limbs too
      (local.set $at (i32.add (local.get $at) (i32.shl (local.get $limbs) (i32.const 3))))
      (local.set $x (i64.sub (local.get $p) (local.get $m)))
      (i64.store (local.get $out) (select (i64.add (local.get $x) (local.get $q)) (local.get $x) (i64.lt_u (local.get $p) (local.get $m))))
      (local.set $out (i32.add (local.get $out) (i32.const 8)))
      (br $coef))))
)
