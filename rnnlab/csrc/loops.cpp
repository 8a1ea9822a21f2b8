// rnnlab's time loops in C++: the per-step work of the `fast` RNN, GRU and LSTM (forward and
// hand-written backpropagation through time) and of greedy generation, for CPU float32.
//
// Python (rnnlab/models/native.py) prepares every buffer and does the large products (input
// projection of all steps, weight gradients, output layer); each function here runs one loop
// over the T time steps: per step one matrix product (ATen, i.e. MKL/oneDNN with both cores)
// and one fused elementwise pass written below, which the compiler vectorises.
// Gate orders are torch's: GRU r, z, n; LSTM i, f, g, o. All tensors are contiguous float32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace {

// e^x, branch-free so that loops calling it vectorise; relative error ~2 float ulp.
// Cody-Waite reduction x = n ln2 + r, a degree-6 polynomial for e^r, 2^n from the exponent bits.
inline float exp_f(float x) {
  x = x > 88.0f ? 88.0f : x;    // NaN fails both comparisons and passes through
  x = x < -87.0f ? -87.0f : x;
  const float shift = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  float n = (x * 1.44269504088896341f + shift) - shift;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }
inline float tanh_f(float x) { return 2.0f / (1.0f + exp_f(-2.0f * x)) - 1.0f; }

// One batch row of each fused elementwise pass. Separate functions with restrict pointers, so
// that the compiler can prove the arrays distinct and vectorise (inside the loops it cannot).
#define ROW __attribute__((noinline)) void
using cf = const float* __restrict;
using mf = float* __restrict;

ROW rnn_forward_row(int64_t H, bool relu, mf p) {
  if (relu) {
    for (int64_t j = 0; j < H; ++j) p[j] = p[j] > 0.0f ? p[j] : 0.0f;
  } else {
    for (int64_t j = 0; j < H; ++j) p[j] = tanh_f(p[j]);
  }
}

// g: dL/dh on entry, dL/d(pre-activation) on exit; h = act(pre-activation)
ROW rnn_backward_row(int64_t H, bool relu, cf h, mf g) {
  if (relu) {
    for (int64_t j = 0; j < H; ++j) g[j] = h[j] > 0.0f ? g[j] : 0.0f;
  } else {
    for (int64_t j = 0; j < H; ++j) g[j] *= 1.0f - h[j] * h[j];
  }
}

ROW gru_forward_row(int64_t H, cf xr, cf xz, cf xn, cf gr, cf gz, cf gn, cf hp, mf ar, mf az, mf an, mf ho) {
  for (int64_t j = 0; j < H; ++j) {
    float r = sigmoid_f(xr[j] + gr[j]);
    float z = sigmoid_f(xz[j] + gz[j]);
    float nn = tanh_f(xn[j] + r * gn[j]);
    ar[j] = r; az[j] = z; an[j] = nn;
    ho[j] = nn + z * (hp[j] - nn);
  }
}

// keep: 1 if dprev already holds dL/dh_{t-1} from the layer above, 0 to start it from zero
ROW gru_backward_row(int64_t H, float keep, cf d, cf hp, cf gn, cf ar, cf az, cf an, mf dr, mf dz, mf dhn,
                     mf dxn, mf dprev) {
  for (int64_t j = 0; j < H; ++j) {
    float r = ar[j], z = az[j], nn = an[j];
    float dn = d[j] * (1.0f - z) * (1.0f - nn * nn);  // dL/d(n pre-activation)
    dhn[j] = dn * r;                                    // dL/d(hn)
    dr[j] = dn * gn[j] * r * (1.0f - r);                // dL/d(r pre-activation)
    dz[j] = d[j] * (hp[j] - nn) * z * (1.0f - z);       // dL/d(z pre-activation)
    dxn[j] = dn;
    dprev[j] = keep * dprev[j] + d[j] * z;              // the direct path h' = ... + z h
  }
}

// a* hold the gate pre-activations on entry and the activations on exit
ROW lstm_forward_row(int64_t H, mf ai, mf af, mf ag, mf ao, cf cp, mf c, mf tc, mf ho) {
  for (int64_t j = 0; j < H; ++j) {
    float i = sigmoid_f(ai[j]), f = sigmoid_f(af[j]), g = tanh_f(ag[j]), o = sigmoid_f(ao[j]);
    ai[j] = i; af[j] = f; ag[j] = g; ao[j] = o;
    float cn = f * cp[j] + i * g;
    float th = tanh_f(cn);
    c[j] = cn; tc[j] = th; ho[j] = o * th;
  }
}

// dc: dL/dc_t from step t+1 on entry, dL/dc_{t-1} on exit
ROW lstm_backward_row(int64_t H, cf ai, cf af, cf ag, cf ao, cf d, cf cp, cf tc, mf dc, mf di, mf df, mf dg,
                      mf dout) {
  for (int64_t j = 0; j < H; ++j) {
    float i = ai[j], f = af[j], g = ag[j], o = ao[j], th = tc[j];
    float dct = dc[j] + d[j] * o * (1.0f - th * th);  // total dL/dc_t
    di[j] = dct * g * i * (1.0f - i);
    df[j] = dct * cp[j] * f * (1.0f - f);
    dg[j] = dct * i * (1.0f - g * g);
    dout[j] = d[j] * th * o * (1.0f - o);
    dc[j] = dct * f;
  }
}

// Runs fn(b) for the B batch rows of a step on all of torch's threads (rows split evenly), so the
// elementwise pass takes half the time on two cores and each core touches the rows it will read.
template <typename Fn>
void rows(int64_t B, const Fn& fn) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) fn(b);
  });
}

// y (N, R) = b + x (N, C) W^T for a weight W (R, C) in torch's (out, in) layout, b a bias (R) with
// b_stride 0 or a per-row term (N, R) with b_stride R, which may be y itself: one dot product
// per output, the outputs split between torch's threads. For one token at a time this is a
// matrix-vector product, limited by reading W: split in two, each core's half of W stays in its
// own cache from step to step (a 512x512 float W is 1 MB; one core's cache would not hold it).
void gemv(const float* __restrict W, const float* b, int64_t b_stride, const float* __restrict x, float* y,
          int64_t N, int64_t R, int64_t C) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1));  // ~128 KB of W per task
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) {  // eight rows of W at once: eight independent sums keep the FMA units busy
      const float* w0 = W + r * C;
      for (int64_t n = 0; n < N; ++n) {  // the rows of W stay in L1 across the N inputs
        const float* xn = x + n * C;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7)
        for (int64_t k = 0; k < C; ++k) {
          const float xk = xn[k];
          a0 += w0[k] * xk; a1 += w0[C + k] * xk; a2 += w0[2 * C + k] * xk; a3 += w0[3 * C + k] * xk;
          a4 += w0[4 * C + k] * xk; a5 += w0[5 * C + k] * xk; a6 += w0[6 * C + k] * xk; a7 += w0[7 * C + k] * xk;
        }
        const float* bn = b + n * b_stride + r;
        float* yn = y + n * R + r;
        const float b0 = bn[0], b1 = bn[1], b2 = bn[2], b3 = bn[3];  // b may be y: read all first
        const float b4 = bn[4], b5 = bn[5], b6 = bn[6], b7 = bn[7];
        yn[0] = b0 + a0; yn[1] = b1 + a1; yn[2] = b2 + a2; yn[3] = b3 + a3;
        yn[4] = b4 + a4; yn[5] = b5 + a5; yn[6] = b6 + a6; yn[7] = b7 + a7;
      }
    }
    for (; r < r1; ++r) {
      const float* w = W + r * C;
      for (int64_t n = 0; n < N; ++n) {
        const float* xn = x + n * C;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < C; ++k) acc += w[k] * xn[k];
        y[n * R + r] = b[n * b_stride + r] + acc;
      }
    }
  });
}

float* fp(const at::Tensor& t) { return t.data_ptr<float>(); }

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "rnnlab loops: ",
              name, " must be a contiguous CPU float32 tensor");
}

// ---------------------------------------------------------------------------------------------
// RNN: h_t = act(xw_t + h_{t-1} W_hh^T)
// ---------------------------------------------------------------------------------------------

// out (T, B, H) holds xw (both biases in); becomes h_1 .. h_T in place. h0 (B, H), w_t = W_hh^T (H, H).
void rnn_forward(at::Tensor out, const at::Tensor& h0, const at::Tensor& w_t, bool relu) {
  check(out, "out");
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2), n = B * H;
  float* out_p = fp(out);
  at::Tensor h = h0;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor o = out.select(0, t);  // (B, H)
    o.addmm_(h, w_t);
    float* p = out_p + t * n;
    rows(B, [&](int64_t b) { rnn_forward_row(H, relu, p + b * H); });
    h = o;
  }
}

// g (T, B, H): dL/dh_t from the layer above (dL/dh_T included); becomes dL/d(pre-activation_t) in
// place. out (T, B, H): h_t. w = W_hh (H, H).
void rnn_backward(at::Tensor g, const at::Tensor& out, const at::Tensor& w, bool relu) {
  check(g, "g"); check(out, "out");
  const int64_t T = g.size(0), B = g.size(1), H = g.size(2), n = B * H;
  float* g_p = fp(g);
  const float* out_p = fp(out);
  for (int64_t t = T - 1; t >= 0; --t) {
    at::Tensor gt = g.select(0, t);  // (B, H)
    float* p = g_p + t * n;
    const float* h = out_p + t * n;
    rows(B, [&](int64_t b) { rnn_backward_row(H, relu, h + b * H, p + b * H); });
    if (t > 0) g.select(0, t - 1).addmm_(gt, w);
  }
}

// ---------------------------------------------------------------------------------------------
// GRU (torch's): r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r * hn), h' = n + z (h - n),
// where x* = x W_i*^T + b_i* (xw) and h* = h W_h*^T + b_h* (gh).
// ---------------------------------------------------------------------------------------------

// xw (T, B, 3H); h0 (B, H); w_t = W_hh^T (H, 3H); b_hh (3H). Writes gh (T, B, 3H), gates
// (T, B, 3H) = r, z, n and out (T, B, H) = h_t.
void gru_forward(const at::Tensor& xw, const at::Tensor& h0, const at::Tensor& w_t, const at::Tensor& b_hh,
                 at::Tensor gh, at::Tensor gates, at::Tensor out) {
  check(xw, "xw"); check(gh, "gh"); check(gates, "gates"); check(out, "out"); check(h0, "h0");
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  const float *xw_p = fp(xw), *gh_p = fp(gh), *h0_p = fp(h0);
  float *gates_p = fp(gates), *out_p = fp(out);
  at::Tensor h = h0;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor gh_t = gh.select(0, t);
    at::addmm_out(gh_t, b_hh, h, w_t);  // (B, 3H)
    const float* hprev = t > 0 ? out_p + (t - 1) * B * H : h0_p;
    rows(B, [&](int64_t b) {
      const int64_t row3 = (t * B + b) * 3 * H, row = (t * B + b) * H;
      const float *__restrict xr = xw_p + row3, *__restrict xz = xr + H, *__restrict xn = xz + H;
      const float *__restrict gr = gh_p + row3, *__restrict gz = gr + H, *__restrict gn = gz + H;
      const float* __restrict hp = hprev + b * H;
      float *__restrict ar = gates_p + row3, *__restrict az = ar + H, *__restrict an = az + H;
      float* __restrict ho = out_p + row;
      gru_forward_row(H, xr, xz, xn, gr, gz, gn, hp, ar, az, an, ho);
    });
    h = out.select(0, t);
  }
}

// dh (T, B, H): dL/dh_t from above (dL/dh_T included); completed in place to the total dL/dh_t.
// Writes dgh (T, B, 3H) = dL/d(gh) and dxn (T, B, H) = dL/d(xn) (dL/d(xr, xz) equal dgh's r, z).
// Returns dL/dh0 (B, H).
at::Tensor gru_backward(at::Tensor dh, const at::Tensor& out, const at::Tensor& h0, const at::Tensor& gh,
                        const at::Tensor& gates, const at::Tensor& w, at::Tensor dgh, at::Tensor dxn) {
  check(dh, "dh"); check(out, "out"); check(h0, "h0"); check(gh, "gh"); check(gates, "gates");
  check(dgh, "dgh"); check(dxn, "dxn");
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  at::Tensor dh0 = at::zeros_like(h0);  // (B, H): dh0 gets no gradient from above
  float *dh_p = fp(dh), *dh0_p = fp(dh0), *dgh_p = fp(dgh), *dxn_p = fp(dxn);
  const float *out_p = fp(out), *h0_p = fp(h0), *gh_p = fp(gh), *gates_p = fp(gates);
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* hprev_base = t > 0 ? out_p + (t - 1) * B * H : h0_p;
    float* dprev_base = t > 0 ? dh_p + (t - 1) * B * H : dh0_p;
    const float keep = t > 0 ? 1.0f : 0.0f;  // dh_{t-1} already holds dL/dh from above; dh0 starts at 0
    rows(B, [&](int64_t b) {
      const int64_t row3 = (t * B + b) * 3 * H, row = (t * B + b) * H;
      const float* __restrict d = dh_p + row;
      const float* __restrict hp = hprev_base + b * H;
      const float* __restrict gn = gh_p + row3 + 2 * H;
      const float *__restrict ar = gates_p + row3, *__restrict az = ar + H, *__restrict an = az + H;
      float *__restrict dr = dgh_p + row3, *__restrict dz = dr + H, *__restrict dhn = dz + H;
      float* __restrict dn_out = dxn_p + row;
      float* __restrict dprev = dprev_base + b * H;
      gru_backward_row(H, keep, d, hp, gn, ar, az, an, dr, dz, dhn, dn_out, dprev);
    });
    at::Tensor dprev_t = t > 0 ? dh.select(0, t - 1) : dh0;
    dprev_t.addmm_(dgh.select(0, t), w);
  }
  return dh0;
}

// ---------------------------------------------------------------------------------------------
// LSTM (torch's): i, f, o = s(.), g = tanh(.), c' = f c + i g, h' = o tanh(c')
// ---------------------------------------------------------------------------------------------

// xw (T, B, 4H) with both biases; h0, c0 (B, H); w_t = W_hh^T (H, 4H). Writes act (T, B, 4H) =
// i, f, g, o after their nonlinearities, cs (T, B, H) = c_t, tc (T, B, H) = tanh(c_t), out = h_t.
void lstm_forward(const at::Tensor& xw, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_t,
                  at::Tensor act, at::Tensor cs, at::Tensor tc, at::Tensor out) {
  check(xw, "xw"); check(h0, "h0"); check(c0, "c0"); check(act, "act"); check(cs, "cs"); check(tc, "tc");
  check(out, "out");
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  float *act_p = fp(act), *cs_p = fp(cs), *tc_p = fp(tc), *out_p = fp(out);
  const float* c0_p = fp(c0);
  at::Tensor h = h0;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor a_t = act.select(0, t);
    at::addmm_out(a_t, xw.select(0, t), h, w_t);  // (B, 4H)
    const float* cprev_base = t > 0 ? cs_p + (t - 1) * B * H : c0_p;
    rows(B, [&](int64_t b) {
      const int64_t row4 = (t * B + b) * 4 * H, row = (t * B + b) * H;
      float *__restrict ai = act_p + row4, *__restrict af = ai + H, *__restrict ag = af + H, *__restrict ao = ag + H;
      const float* __restrict cp = cprev_base + b * H;
      float* __restrict c = cs_p + row;
      float* __restrict tcv = tc_p + row;
      float* __restrict ho = out_p + row;
      lstm_forward_row(H, ai, af, ag, ao, cp, c, tcv, ho);
    });
    h = out.select(0, t);
  }
}

// dh (T, B, H): dL/dh_t from above (dL/dh_T included), completed in place. dc (B, H): dL/dc_T in,
// dL/dc_0 out. Writes dg (T, B, 4H) = dL/d(gate pre-activations). Returns dL/dh0 (B, H).
at::Tensor lstm_backward(at::Tensor dh, at::Tensor dc, const at::Tensor& c0, const at::Tensor& act,
                         const at::Tensor& cs, const at::Tensor& tc, const at::Tensor& w, at::Tensor dg) {
  check(dh, "dh"); check(dc, "dc"); check(c0, "c0"); check(act, "act"); check(cs, "cs"); check(tc, "tc");
  check(dg, "dg");
  const int64_t T = dh.size(0), B = dh.size(1), H = dh.size(2);
  at::Tensor dh0 = at::empty_like(c0);
  const float *act_p = fp(act), *dh_p = fp(dh), *cs_p = fp(cs), *c0_p = fp(c0), *tc_p = fp(tc);
  float *dc_p = fp(dc), *dg_p = fp(dg);
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* cprev_base = t > 0 ? cs_p + (t - 1) * B * H : c0_p;
    rows(B, [&](int64_t b) {
      const int64_t row4 = (t * B + b) * 4 * H, row = (t * B + b) * H;
      const float *__restrict ai = act_p + row4, *__restrict af = ai + H, *__restrict ag = af + H, *__restrict ao = ag + H;
      const float* __restrict d = dh_p + row;
      const float* __restrict cp = cprev_base + b * H;
      const float* __restrict tcv = tc_p + row;
      float* __restrict dcv = dc_p + b * H;
      float *__restrict di = dg_p + row4, *__restrict df = di + H, *__restrict dgg = df + H, *__restrict dout = dgg + H;
      lstm_backward_row(H, ai, af, ag, ao, d, cp, tcv, dcv, di, df, dgg, dout);
    });
    if (t > 0) {
      dh.select(0, t - 1).addmm_(dg.select(0, t), w);
    } else {
      at::mm_out(dh0, dg.select(0, 0), w);
    }
  }
  return dh0;
}

// ---------------------------------------------------------------------------------------------
// Linear scan (minGRU, minLSTM): h_t = a_t * h_{t-1} + b_t, elementwise, over T steps
// ---------------------------------------------------------------------------------------------

// a, b, out (T, N); h0 (N). Each thread takes a range of the N columns for all T steps (the state
// of a column never leaves that thread's cache; the loop over a range vectorises).
void scan_forward(const at::Tensor& a, const at::Tensor& b, const at::Tensor& h0, at::Tensor out) {
  check(a, "a"); check(b, "b"); check(h0, "h0"); check(out, "out");
  const int64_t T = a.size(0), N = a.size(1);
  const float *a_p = fp(a), *b_p = fp(b), *h0_p = fp(h0);
  float* o_p = fp(out);
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<float> h(h0_p + begin, h0_p + end);
    float* hp = h.data();
    for (int64_t t = 0; t < T; ++t) {
      cf at_ = a_p + t * N + begin;
      cf bt = b_p + t * N + begin;
      mf ot = o_p + t * N + begin;
      for (int64_t j = 0; j < n; ++j) {
        hp[j] = at_[j] * hp[j] + bt[j];
        ot[j] = hp[j];
      }
    }
  });
}

// dout (T, N): dL/dh_t from outside; a, out (T, N), h0 (N) from the forward. Writes da, db (T, N)
// and dh0 (N): a running g_t = dout_t + a_{t+1} g_{t+1}; db_t = g_t, da_t = g_t h_{t-1}.
void scan_backward(const at::Tensor& dout, const at::Tensor& a, const at::Tensor& out, const at::Tensor& h0,
                   at::Tensor da, at::Tensor db, at::Tensor dh0) {
  check(dout, "dout"); check(a, "a"); check(out, "out"); check(h0, "h0");
  check(da, "da"); check(db, "db"); check(dh0, "dh0");
  const int64_t T = a.size(0), N = a.size(1);
  const float *d_p = fp(dout), *a_p = fp(a), *o_p = fp(out), *h0_p = fp(h0);
  float *da_p = fp(da), *db_p = fp(db), *dh0_p = fp(dh0);
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<float> carry(n, 0.0f);  // a_{t+1} g_{t+1}
    float* cp = carry.data();
    for (int64_t t = T - 1; t >= 0; --t) {
      cf dt = d_p + t * N + begin;
      cf at_ = a_p + t * N + begin;
      cf hprev = t > 0 ? o_p + (t - 1) * N + begin : h0_p + begin;
      mf dat = da_p + t * N + begin;
      mf dbt = db_p + t * N + begin;
      for (int64_t j = 0; j < n; ++j) {
        float gj = dt[j] + cp[j];
        dbt[j] = gj;
        dat[j] = gj * hprev[j];
        cp[j] = gj * at_[j];
      }
    }
    std::memcpy(dh0_p + begin, cp, n * sizeof(float));
  });
}

// ---------------------------------------------------------------------------------------------
// Greedy generation: the whole token loop in C++ (the book's predict_ch8 after the warm-up)
// ---------------------------------------------------------------------------------------------

// Continues N rows by `length` tokens, each the argmax of the previous logits (ids in `banned`
// never chosen). logits (N, V): after the prefix. h, c (L, N, H): the state after the prefix, updated
// in place (c is empty unless LSTM). Weights in torch's layout, per layer k: w_ih[k] (G*H, I) and
// b_in[k] (G*H) for k >= 1 (layer 0 reads row `token` of `table` (V, G*H) instead), w_hh[k] (G*H, H),
// b_hh[k] (G*H); b_in holds both biases for RNN/LSTM and b_ih only for the GRU; head_w (V, H).
// Returns ids (N, length).
at::Tensor greedy(const std::string& mode, bool relu, const at::Tensor& table, at::TensorList w_ih,
                  at::TensorList b_in, at::TensorList w_hh, at::TensorList b_hh, const at::Tensor& head_w,
                  const at::Tensor& head_b, at::Tensor h, at::Tensor c, const at::Tensor& logits,
                  const at::Tensor& banned, int64_t length) {
  check(table, "table"); check(h, "h");
  const int64_t L = h.size(0), N = h.size(1), H = h.size(2), GH = table.size(1), V = logits.size(1);
  const bool lstm = mode == "lstm", gru = mode == "gru";
  TORCH_CHECK(mode == "rnn" || gru || lstm, "rnnlab loops: unknown cell ", mode);
  if (lstm) check(c, "c");
  auto opts = h.options();
  at::Tensor out = at::empty({N, length}, opts.dtype(at::kLong));
  at::Tensor lg = logits.contiguous().clone();                // (N, V)
  at::Tensor xw = at::empty({N, GH}, opts), gh = at::empty({N, GH}, opts);
  at::Tensor gates = at::empty({N, GH}, opts), hnew = at::empty({N, H}, opts);
  at::Tensor cnew = at::empty({N, H}, opts), tcb = at::empty({N, H}, opts);
  const int64_t* ban = banned.data_ptr<int64_t>();
  const int64_t nban = banned.numel();
  int64_t* ids = out.data_ptr<int64_t>();
  std::vector<int64_t> tok(N);
  float *lg_p = fp(lg), *xw_p = fp(xw), *gh_p = fp(gh), *gates_p = fp(gates), *hnew_p = fp(hnew);
  float *cnew_p = fp(cnew), *tc_p = fp(tcb), *h_p = fp(h), *c_p = lstm ? fp(c) : nullptr;
  const float* table_p = fp(table);
  for (int64_t t = 0; t < length; ++t) {
    for (int64_t r = 0; r < N; ++r) {  // argmax, first index on ties (as torch.argmax)
      float* row = lg_p + r * V;
      for (int64_t i = 0; i < nban; ++i) row[ban[i]] = -INFINITY;
      int64_t best = 0;
      for (int64_t v = 1; v < V; ++v) best = row[v] > row[best] ? v : best;
      tok[r] = best;
      ids[r * length + t] = best;
    }
    if (t + 1 == length) break;
    for (int64_t k = 0; k < L; ++k) {
      at::Tensor hk = h.select(0, k);  // (N, H)
      if (k == 0) {
        for (int64_t r = 0; r < N; ++r) std::memcpy(xw_p + r * GH, table_p + tok[r] * GH, GH * sizeof(float));
      } else {
        gemv(fp(w_ih[k]), fp(b_in[k]), 0, h_p + (k - 1) * N * H, xw_p, N, GH, H);
      }
      float* hk_p = h_p + k * N * H;
      if (gru) {
        gemv(fp(w_hh[k]), fp(b_hh[k]), 0, hk_p, gh_p, N, GH, H);
        for (int64_t r = 0; r < N; ++r) {
          const float *x = xw_p + r * GH, *g = gh_p + r * GH;
          float* a = gates_p + r * GH;
          gru_forward_row(H, x, x + H, x + 2 * H, g, g + H, g + 2 * H, hk_p + r * H, a, a + H, a + 2 * H,
                          hnew_p + r * H);
        }
        std::memcpy(hk_p, hnew_p, N * H * sizeof(float));
      } else if (lstm) {
        gemv(fp(w_hh[k]), xw_p, GH, hk_p, xw_p, N, GH, H);  // xw += W_hh h
        float* ck_p = c_p + k * N * H;
        for (int64_t r = 0; r < N; ++r) {
          float* a = xw_p + r * GH;
          lstm_forward_row(H, a, a + H, a + 2 * H, a + 3 * H, ck_p + r * H, cnew_p + r * H, tc_p + r * H,
                           hnew_p + r * H);
        }
        std::memcpy(ck_p, cnew_p, N * H * sizeof(float));
        std::memcpy(hk_p, hnew_p, N * H * sizeof(float));
      } else {
        gemv(fp(w_hh[k]), xw_p, GH, hk_p, xw_p, N, GH, H);
        for (int64_t r = 0; r < N; ++r) rnn_forward_row(H, relu, xw_p + r * GH);
        std::memcpy(hk_p, xw_p, N * H * sizeof(float));
      }
    }
    gemv(fp(head_w), fp(head_b), 0, h_p + (L - 1) * N * H, lg_p, N, V, H);  // (N, V)
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(rnnlab, m) {
  m.def("rnn_forward(Tensor(a!) out, Tensor h0, Tensor w_t, bool relu) -> ()", rnn_forward);
  m.def("rnn_backward(Tensor(a!) g, Tensor out, Tensor w, bool relu) -> ()", rnn_backward);
  m.def("gru_forward(Tensor xw, Tensor h0, Tensor w_t, Tensor b_hh, Tensor(a!) gh, Tensor(b!) gates, "
        "Tensor(c!) out) -> ()", gru_forward);
  m.def("gru_backward(Tensor(a!) dh, Tensor out, Tensor h0, Tensor gh, Tensor gates, Tensor w, "
        "Tensor(b!) dgh, Tensor(c!) dxn) -> Tensor", gru_backward);
  m.def("lstm_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_t, Tensor(a!) act, Tensor(b!) cs, "
        "Tensor(c!) tc, Tensor(d!) out) -> ()", lstm_forward);
  m.def("lstm_backward(Tensor(a!) dh, Tensor(b!) dc, Tensor c0, Tensor act, Tensor cs, Tensor tc, Tensor w, "
        "Tensor(c!) dg) -> Tensor", lstm_backward);
  m.def("scan_forward(Tensor a, Tensor b, Tensor h0, Tensor(a!) out) -> ()", scan_forward);
  m.def("scan_backward(Tensor dout, Tensor a, Tensor out, Tensor h0, Tensor(a!) da, Tensor(b!) db, Tensor(c!) dh0) -> ()",
        scan_backward);
  m.def("greedy(str mode, bool relu, Tensor table, Tensor[] w_ih, Tensor[] b_in, Tensor[] w_hh, Tensor[] b_hh, "
        "Tensor head_w, Tensor head_b, Tensor(a!) h, Tensor(b!) c, Tensor logits, Tensor banned, int length) "
        "-> Tensor", greedy);
}
