// The fused op's definition on the host (arnorm.h): s and h exactly as
// specified (fp32 rank-order sum, roundings to T), y in fp64 from the
// rounded h; and the bound the tests allow y.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "harness.h"

namespace arnorm_test {

// xs[r]: rank r's input; residual may be empty (no residual).
template <typename T, typename W>
void fused_reference(const std::vector<std::vector<T>>& xs, const std::vector<T>& residual,
                     const std::vector<W>& weight, size_t tokens, size_t hidden, float eps, std::vector<T>* h,
                     std::vector<double>* y) {
  const size_t n = tokens * hidden;
  std::vector<float> acc(n);
  for (size_t r = 0; r < xs.size(); ++r)
    for (size_t i = 0; i < n; ++i) acc[i] = r == 0 ? to_float(xs[r][i]) : acc[i] + to_float(xs[r][i]);
  h->resize(n);
  y->resize(n);
  for (size_t t = 0; t < tokens; ++t) {
    double ss = 0;
    for (size_t k = 0; k < hidden; ++k) {
      const size_t i = t * hidden + k;
      const float s = to_float(from_float<T>(acc[i]));
      (*h)[i] = residual.empty() ? from_float<T>(s) : from_float<T>(s + to_float(residual[i]));
      const double hv = to_float((*h)[i]);
      ss += hv * hv;
    }
    const double scale = 1.0 / std::sqrt(ss / hidden + eps);
    for (size_t k = 0; k < hidden; ++k) {
      const size_t i = t * hidden + k;
      (*y)[i] = to_float((*h)[i]) * scale * to_float(weight[k]);
    }
  }
}

// The bound tested for y: one unit in the last place of T at the reference
// value (the final rounding plus fp32 error in the mean and rsqrt that can
// carry it across a rounding boundary; subnormals have a fixed unit), plus
// 3e-5 relative for that fp32 error itself.
template <typename T>
double allowed_error(double ref) {
  const bool fp32 = sizeof(T) == 4, fp16 = std::is_same<T, __half>::value;
  const int mantissa = fp32 ? 23 : (fp16 ? 10 : 7);
  const int min_exponent = fp32 ? -126 : (fp16 ? -14 : -126);  // of the smallest normal
  const double a = std::fabs(ref);
  const int e = a > 0 ? std::max(std::ilogb(a), min_exponent) : min_exponent;
  return std::ldexp(1.0, e - mantissa) + 3e-5 * a;
}

// Outputs of y outside the bound (NaN included); *worst: the largest error.
template <typename T>
size_t count_outside_bound(const std::vector<T>& got, const std::vector<double>& ref, double* worst = nullptr,
                           size_t* first_bad = nullptr) {
  size_t bad = 0;
  double w = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double d = std::fabs(to_float(got[i]) - ref[i]);
    if (!(d <= allowed_error<T>(ref[i])) && bad++ == 0 && first_bad) *first_bad = i;
    if (d > w || d != d) w = d;
  }
  if (worst) *worst = w;
  return bad + (got.size() != ref.size() ? 1 : 0);
}

}  // namespace arnorm_test
