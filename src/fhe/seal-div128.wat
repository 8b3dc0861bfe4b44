;; A replacement for SEAL's divide_uint128_uint64_inplace_generic in node-seal's WebAssembly
;; (seal-patch.ts splices this function's body in place of SEAL's). SEAL builds for WebAssembly
;; without a 128-bit divide and falls back to a loop over the quotient's bits; every NTT table
;; entry of every prime of every level calls it twice (MultiplyUIntModOperand::set_quotient), so
;; creating a SEALContext spends ~93% of its time there (2.4 s at N = 16384 with 8 primes).
;; This is Knuth's algorithm D for one 64-bit divisor in 32-bit digits (Hacker's Delight's
;; divlu): two 64-bit hardware divisions and at most four corrections.
;;
;; Contract (SEAL's, uintarith.h): numerator[0..1] is a 128-bit value (low word first), the
;; divisor is nonzero; writes quotient[0..1] and leaves the remainder in numerator[0..1].
;; A zero divisor (never passed by SEAL: moduli are nonzero) leaves the numerator and writes a
;; zero quotient instead of trapping.
;; Compiled by scripts/build-kernel.ts into kernel-wasm.ts; the tests check it against BigInt
;; division and SEAL built both ways against each other.
(module
  (memory (export "memory") 1)
  (func (export "div128") (param $num i32) (param $d i64) (param $quo i32)
    (local $n0 i64) (local $n1 i64) (local $qhi i64) (local $s i64)
    (local $v i64) (local $vn1 i64) (local $vn0 i64)
    (local $un32 i64) (local $un10 i64) (local $un1 i64) (local $un0 i64) (local $un21 i64)
    (local $q1 i64) (local $q0 i64) (local $rhat i64)
    (i64.store (local.get $quo) (i64.const 0))
    (i64.store offset=8 (local.get $quo) (i64.const 0))
    (if (i64.eqz (local.get $d)) (then (return)))
    (local.set $n0 (i64.load (local.get $num)))
    (local.set $n1 (i64.load offset=8 (local.get $num)))
    ;; High word first: its quotient is the result's high word; its remainder (< d) heads the
    ;; 128-by-64 division below, whose quotient then fits 64 bits.
    (if (i64.ge_u (local.get $n1) (local.get $d))
      (then
        (local.set $qhi (i64.div_u (local.get $n1) (local.get $d)))
        (local.set $n1 (i64.rem_u (local.get $n1) (local.get $d)))))
    ;; Normalize: shift the divisor until its top bit is set, the numerator with it.
    (local.set $s (i64.clz (local.get $d)))
    (local.set $v (i64.shl (local.get $d) (local.get $s)))
    (local.set $vn1 (i64.shr_u (local.get $v) (i64.const 32)))
    (local.set $vn0 (i64.and (local.get $v) (i64.const 0xffffffff)))
    ;; n0 >> (64 - s) is n0 >> 0 when s = 0 (shift counts are taken mod 64): mask it off then.
    (local.set $un32
      (i64.or
        (i64.shl (local.get $n1) (local.get $s))
        (i64.and
          (i64.shr_u (local.get $n0) (i64.sub (i64.const 64) (local.get $s)))
          (i64.shr_s (i64.sub (i64.const 0) (local.get $s)) (i64.const 63)))))
    (local.set $un10 (i64.shl (local.get $n0) (local.get $s)))
    (local.set $un1 (i64.shr_u (local.get $un10) (i64.const 32)))
    (local.set $un0 (i64.and (local.get $un10) (i64.const 0xffffffff)))
    ;; First quotient digit: estimate from the top digits, correct at most twice.
    (local.set $q1 (i64.div_u (local.get $un32) (local.get $vn1)))
    (local.set $rhat (i64.sub (local.get $un32) (i64.mul (local.get $q1) (local.get $vn1))))
    (loop $fix1
      (if
        (if (result i32) (i64.ge_u (local.get $q1) (i64.const 0x100000000))
          (then (i32.const 1))
          (else
            (i64.gt_u
              (i64.mul (local.get $q1) (local.get $vn0))
              (i64.add (i64.shl (local.get $rhat) (i64.const 32)) (local.get $un1)))))
        (then
          (local.set $q1 (i64.sub (local.get $q1) (i64.const 1)))
          (local.set $rhat (i64.add (local.get $rhat) (local.get $vn1)))
          (br_if $fix1 (i64.lt_u (local.get $rhat) (i64.const 0x100000000))))))
    ;; The partial remainder (< v), then the second digit the same way.
    (local.set $un21
      (i64.sub
        (i64.add (i64.shl (local.get $un32) (i64.const 32)) (local.get $un1))
        (i64.mul (local.get $q1) (local.get $v))))
    (local.set $q0 (i64.div_u (local.get $un21) (local.get $vn1)))
    (local.set $rhat (i64.sub (local.get $un21) (i64.mul (local.get $q0) (local.get $vn1))))
    (loop $fix0
      (if
        (if (result i32) (i64.ge_u (local.get $q0) (i64.const 0x100000000))
          (then (i32.const 1))
          (else
            (i64.gt_u
              (i64.mul (local.get $q0) (local.get $vn0))
              (i64.add (i64.shl (local.get $rhat) (i64.const 32)) (local.get $un0)))))
        (then
          (local.set $q0 (i64.sub (local.get $q0) (i64.const 1)))
          (local.set $rhat (i64.add (local.get $rhat) (local.get $vn1)))
          (br_if $fix0 (i64.lt_u (local.get $rhat) (i64.const 0x100000000))))))
    (i64.store (local.get $quo) (i64.or (i64.shl (local.get $q1) (i64.const 32)) (local.get $q0)))
    (i64.store offset=8 (local.get $quo) (local.get $qhi))
    ;; Remainder, shifted back.
    (i64.store (local.get $num)
      (i64.shr_u
        (i64.sub
          (i64.add (i64.shl (local.get $un21) (i64.const 32)) (local.get $un0))
          (i64.mul (local.get $q0) (local.get $v)))
        (local.get $s)))
    (i64.store offset=8 (local.get $num) (i64.const 0))))
