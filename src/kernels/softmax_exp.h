// The constants of the softmax's e^x in this library's CPU attention loops (cpu_decode_attention,
// eight lanes with AVX2; cpu_bf16_attention, sixteen with AVX-512): one formula, within 2 ulp for
// x <= 88.3. x = n ln2 + r with n = round(x log2 e), |r| <= ln2 / 2 (ln2 taken in two parts, so that
// n ln2 is exact enough), e^r = 1 + r + r^2 (c0 + c1 r + ... + c5 r^5) (Cephes' expf polynomial),
// times 2^n built in the exponent bits. Below kMinX e^x leaves the normal floats: the loops give 0
// there, as for -inf.
#pragma once

namespace glmimage::kernels::softmax_exp {

constexpr float kMaxX = 88.3762626647949f;   // the largest x whose e^x is finite
constexpr float kMinX = -87.3365447505531f;  // below: 0
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
// c5, c4, ..., c0: Horner's order
constexpr float kPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

}  // namespace glmimage::kernels::softmax_exp
