;; The single-record trees' gather products (gather-kernel.ts): u64 residues, i64x2 widening
;; multiplies, one Montgomery reduction per residue. Two memories: 0, this thread's own (the
;; query's copies, the accumulators, the output and a scratch polynomial), and 1, the masks,
;; shared by the threads of a process (built by the first, read by all: macSplit reads them
;; there, splitMask writes them). Compiled by scripts/build-kernel.ts into kernel-wasm.ts.
(module
  (import "env" "scratch" (memory 1))
  (import "env" "masks" (memory 1 65536 shared))
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

  ;; split, from this thread's memory into the masks' (memory 1).
  (func (export "splitMask") (param $src i32) (param $lo i32) (param $hi i32) (param $n i32) (param $b i64)
    (local $end i32) (local $x i64)
    (local.set $end (i32.add (local.get $src) (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
      (local.set $x (i64.load (local.get $src)))
      (i32.store 1 (local.get $lo) (i32.wrap_i64 (i64.and (local.get $x) (i64.sub (i64.shl (i64.const 1) (local.get $b)) (i64.const 1)))))
      (i32.store 1 (local.get $hi) (i32.wrap_i64 (i64.shr_u (local.get $x) (local.get $b))))
      (local.set $src (i32.add (local.get $src) (i32.const 8)))
      (local.set $lo (i32.add (local.get $lo) (i32.const 4)))
      (local.set $hi (i32.add (local.get $hi) (i32.const 4)))
      (br $top))))

  ;; A0 += x_lo m_lo, A1 += x_lo m_hi + x_hi m_lo, A2 += x_hi m_hi, for i < n (n a multiple of 4); m in the masks' memory.
  (func (export "macSplit") (param $xlo i32) (param $xhi i32) (param $mlo i32) (param $mhi i32) (param $acc i32) (param $n i32)
    (local $i i32) (local $a0 i32) (local $a1 i32) (local $a2 i32)
    (local $xl v128) (local $xh v128) (local $ml v128) (local $mh v128)
    (local.set $i (i32.const 0))
    (block $done (loop $top
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $xl (v128.load (i32.add (local.get $xlo) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $xh (v128.load (i32.add (local.get $xhi) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $ml (v128.load 1 (i32.add (local.get $mlo) (i32.shl (local.get $i) (i32.const 2)))))
      (local.set $mh (v128.load 1 (i32.add (local.get $mhi) (i32.shl (local.get $i) (i32.const 2)))))
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
