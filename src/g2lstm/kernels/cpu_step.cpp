// The sequence loops of the fused G2-LSTM kernel on CPU: forward and backward through time, one call each.
//
// Same contract as the Python loop of g2lstm/kernels/fused.py. The recurrent product of every step is
// computed here, not by a library call: the hidden-to-hidden weights are packed once per call into panels
// that hold the four gates (i, f, g, o) of a block of hidden units side by side, and each thread owns a set
// of unit blocks for the whole sequence. A step is then, per block, a small register-blocked product
// (h_{t-1} against the block's panel, added to the step's input part of the pre-activations) followed at
// once, while the block's pre-activations are still in L1, by all the element-wise work of those units: the
// gate noise (Philox4x32-10 bits of each element's position under the call's key, made here, turned into
// noise as g2lstm.functional.gate_bits and noise_from_bits do), the gate nonlinearities (input and forget
// gates sigmoid(scale * a) or 1[a >= 0]), the cell and hidden updates. Going back, a
// thread owns blocks of hidden units again: the product dG_{t+1} W_hh for its units, then the local
// derivatives of the step for the same units. One OpenMP region runs the whole sequence, with one barrier
// per step; no tensor is allocated and no library is called inside the loop.
//
// The code is written once with ATen's vector type and compiled per instruction set (AVX-512, AVX2 or
// portable; see g2lstm/kernels/compiled.py), so register blocking follows the vector width it is built for.
// Packed input: step t has the first batch_sizes[t] sequences; rows of a step are sequences, in order.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <omp.h>
#include <torch/python.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

// Rows of one register block: as many accumulator rows of four vectors as the vector registers allow (32 with
// AVX-512, 16 otherwise), leaving room for the four weight vectors and the broadcast value.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kBlockRows = 6;
#else
constexpr int kBlockRows = 3;
#endif

// ---------------------------------------------------------------------------------------------- helpers

template <typename scalar_t>
Vec<scalar_t> load(const scalar_t* data, int64_t count) {
  return count == Vec<scalar_t>::size() ? Vec<scalar_t>::loadu(data) : Vec<scalar_t>::loadu(data, count);
}

template <typename scalar_t>
void store(const Vec<scalar_t>& value, scalar_t* data, int64_t count) {
  if (count == Vec<scalar_t>::size()) {
    value.store(data);
  } else {
    value.store(data, count);
  }
}

// exp for the gate nonlinearities: in float ATen's exp_u20 (within 20 ULP, several times faster than the
// 1-ULP exp; float32's own rounding in the cell update is of the same order), exact-rounded in double. NaN
// propagates (exp_u20 alone would clamp it to a finite value and hide a diverged run).
template <typename scalar_t>
Vec<scalar_t> gate_exp(const Vec<scalar_t>& x) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return Vec<scalar_t>::blendv(x.exp_u20(), x, x.isnan());
  } else {
    return x.exp();
  }
}

template <typename scalar_t>
Vec<scalar_t> sigmoid(const Vec<scalar_t>& x) {
  return (Vec<scalar_t>(1) + gate_exp(x.neg())).reciprocal();
}

// tanh(x) = 2 sigmoid(2x) - 1 in float (absolute error near 1e-7, as float32's rounding), exact in double.
template <typename scalar_t>
Vec<scalar_t> gate_tanh(const Vec<scalar_t>& x) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return Vec<scalar_t>(2) * sigmoid(x + x) - Vec<scalar_t>(1);
  } else {
    return x.tanh();
  }
}

// The random bits of one uniform (g2lstm.functional.gate_bits): int32 (24 bits used) for float, int64
// (53 bits used) for double.
template <typename scalar_t>
struct Bits {
  using type = int32_t;
  static constexpr int used = 24;
};
template <>
struct Bits<double> {
  using type = int64_t;
  static constexpr int used = 53;
};
template <typename scalar_t>
using bits_t = typename Bits<scalar_t>::type;

// The gate noise of `count` random bits, as g2lstm.functional.noise_from_bits: the uniform v of their low
// bits, then where v < p the logistic noise log(u + eps) - log(1 + eps - u) of u = v / p, elsewhere 0.
template <typename scalar_t>
struct GateNoise {
  scalar_t p;
  scalar_t eps;

  Vec<scalar_t> operator()(const bits_t<scalar_t>* bits, int64_t count) const {
    using V = Vec<scalar_t>;
    using I = at::vec::Vectorized<bits_t<scalar_t>>;
    static_assert(I::size() == V::size(), "one random integer per value");
    const I mask((bits_t<scalar_t>(1) << Bits<scalar_t>::used) - 1);
    const V step(std::ldexp(scalar_t(1), -Bits<scalar_t>::used));
    const I raw = count == I::size() ? I::loadu(bits) : I::loadu(bits, count);
    const V v = at::vec::convert_to_fp_of_same_size<scalar_t>(raw & mask) * step;
    const V shifted = v / V(p) + V(eps);
    const V noise = (shifted / (V(1 + 2 * eps) - shifted)).log();
    return V::blendv(V(0), noise, v < V(p));
  }
};

// Philox4x32-10 (Salmon et al. 2011), as g2lstm.functional.philox4x32: the four counter words become the
// four output words. Written on plain integers so that the compiler vectorises a loop of them.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

inline void philox(uint32_t& x0, uint32_t& x1, uint32_t& x2, uint32_t& x3, uint32_t k0, uint32_t k1) {
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kPhiloxM0) * x0, p1 = uint64_t(kPhiloxM1) * x2;
    const uint32_t y0 = uint32_t(p1 >> 32) ^ x1 ^ k0, y2 = uint32_t(p0 >> 32) ^ x3 ^ k1;
    x1 = uint32_t(p1);
    x3 = uint32_t(p0);
    x0 = y0;
    x2 = y2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// The random bits of the input- and forget-gate noise of `rows` rows (packed rows row0, row0 + 1, ...) and
// the U units from `unit`, as g2lstm.functional.gate_bits: out[r][gate][u]. Element (row, gate, unit) is
// word unit % 4 of counter (unit / 4, row, gate, 0); in double, 53 bits of words 2 (unit % 2) and
// 2 (unit % 2) + 1 of counter (unit / 2, row, gate, 0).
template <typename scalar_t, int kMaxRows>
void gate_bits(uint32_t key0, uint32_t key1, int64_t row0, int64_t rows, int64_t unit, bits_t<scalar_t>* out) {
  constexpr int64_t U = Vec<scalar_t>::size();
  constexpr bool wide = std::is_same_v<scalar_t, double>;
  constexpr int64_t per_counter = wide ? 2 : 4, counters = U / per_counter, block = 2 * counters;
  static_assert(U % per_counter == 0, "whole counters per vector");
  uint32_t x0[kMaxRows * block], x1[kMaxRows * block], x2[kMaxRows * block], x3[kMaxRows * block];
  const int64_t count = rows * block;
  for (int64_t k = 0; k < count; ++k) {
    x0[k] = uint32_t(unit / per_counter + k % counters);
    x1[k] = uint32_t(row0 + k / block);
    x2[k] = uint32_t(k / counters % 2);
    x3[k] = 0;
  }
  for (int64_t k = 0; k < count; ++k) philox(x0[k], x1[k], x2[k], x3[k], key0, key1);
  for (int64_t k = 0; k < count; ++k) {
    bits_t<scalar_t>* word = out + k * per_counter;  // counters of a row and gate are consecutive in out
    if constexpr (wide) {
      word[0] = int64_t(uint64_t(x0[k] & 0x1FFFFFu) << 32 | x1[k]);
      word[1] = int64_t(uint64_t(x2[k] & 0x1FFFFFu) << 32 | x3[k]);
    } else {
      word[0] = int32_t(x0[k]);
      word[1] = int32_t(x1[k]);
      word[2] = int32_t(x2[k]);
      word[3] = int32_t(x3[k]);
    }
  }
}

// Steps in processing order with their packed row offsets, and for each the previous step processed (whose
// rows [0, continuing) carry on into this one; rows beyond start from h0 / c0).
struct Schedule {
  std::vector<int64_t> order, sizes, offsets, previous;

  Schedule(const std::vector<int64_t>& batch_sizes, bool reverse) {
    const int64_t steps = static_cast<int64_t>(batch_sizes.size());
    std::vector<int64_t> offset(steps, 0);
    for (int64_t t = 1; t < steps; ++t) offset[t] = offset[t - 1] + batch_sizes[t - 1];
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t t = reverse ? steps - 1 - k : k;
      order.push_back(t);
      sizes.push_back(batch_sizes[t]);
      offsets.push_back(offset[t]);
      previous.push_back(k == 0 ? -1 : k - 1);  // index into order
    }
  }

  int64_t continuing(int64_t k) const {
    return previous[k] < 0 ? 0 : std::min(sizes[k], sizes[previous[k]]);
  }
};

// Contiguous range of `count` items owned by thread `thread` of `threads`.
std::pair<int64_t, int64_t> share(int64_t count, int thread, int threads) {
  return {count * thread / threads, count * (thread + 1) / threads};
}

int team_size() {
  // Nested inside another parallel region (e.g. a caller's at::parallel_for) the team is one thread.
  return at::in_parallel_region() ? 1 : at::get_num_threads();
}

// ------------------------------------------------------------------------------------------ the product

// out[r * out_stride + (0 .. NV*U)] = sum_k a_rows[r][k] * panel[k][0 .. NV*U) for R rows: the
// register-blocked core of every product here (R x NV vector accumulators). The unroll pragmas keep the
// accumulators in registers: without them GCC stores every accumulator back to the stack on each k.
template <typename scalar_t, int R, int NV>
void panel_product(const scalar_t* __restrict__ panel, const scalar_t* const* a_rows, int64_t K,
                   scalar_t* __restrict__ out, int64_t out_stride) {
  using V = Vec<scalar_t>;
  constexpr int64_t U = V::size();
  V acc[R][NV];
  const scalar_t* rows[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    rows[r] = a_rows[r];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V(0);
  }
  for (int64_t k = 0; k < K; ++k) {
    V w[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) w[v] = V::loadu(panel + (k * NV + v) * U);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V a(rows[r][k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(a, w[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v].store(out + r * out_stride + v * U);
  }
}

// panel_product with the row count (at most kBlockRows) and vector count (1 to 4) chosen at run time.
template <typename scalar_t, int R = kBlockRows>
void panel_rows(const scalar_t* panel, const scalar_t* const* a_rows, int64_t rows, int64_t vectors, int64_t K,
                scalar_t* out, int64_t out_stride) {
  if constexpr (R > 1) {
    if (rows < R) return panel_rows<scalar_t, R - 1>(panel, a_rows, rows, vectors, K, out, out_stride);
  }
  switch (vectors) {
    case 1: return panel_product<scalar_t, R, 1>(panel, a_rows, K, out, out_stride);
    case 2: return panel_product<scalar_t, R, 2>(panel, a_rows, K, out, out_stride);
    case 3: return panel_product<scalar_t, R, 3>(panel, a_rows, K, out, out_stride);
    default: return panel_product<scalar_t, R, 4>(panel, a_rows, K, out, out_stride);
  }
}

// Rows per register block for `size` rows: as many as the registers allow, evened out over the blocks (20
// rows are 5 + 5 + 5 + 5, not 6 + 6 + 6 + 2).
int64_t block_rows(int64_t size) {
  const int64_t blocks = (size + kBlockRows - 1) / kBlockRows;
  return (size + blocks - 1) / blocks;
}

// ---------------------------------------------------------------------------------------- forward pass

// Everything one forward step needs; row r of the step is packed row `start + r`.
template <typename scalar_t>
struct ForwardStep {
  const scalar_t* gate_inputs;  // (N, 4H)
  bool noisy;                   // add gate noise keyed by (key0, key1)
  uint32_t key0, key1;
  GateNoise<scalar_t> noise;
  const scalar_t* weight_hh;    // (4H, H)
  scalar_t* panels;             // [vector block][k][gate][U], packed by the block's owner
  const scalar_t* h_prev;       // rows [0, continuing): previous step's output rows; beyond: h0
  const scalar_t* c_prev;
  const scalar_t* h0;
  const scalar_t* c0;
  scalar_t* gates;              // (N, 4H)
  scalar_t* cells;              // (N, H)
  scalar_t* tanh_cells;         // (N, H)
  scalar_t* output;             // (N, H)
  int64_t start, size, continuing, hidden;
  scalar_t scale;
  bool hard;
};

// The forward panel of unit block b (units [b*U, b*U + U)): for k in [0, H) and gate g, the U weights
// W_hh[g*H + unit][k], zero past the last unit.
template <typename scalar_t>
void pack_forward_block(const ForwardStep<scalar_t>& s, int64_t b) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t H = s.hidden;
  scalar_t* panel = s.panels + b * H * 4 * U;
  for (int64_t g = 0; g < 4; ++g) {
    for (int64_t u = 0; u < U; ++u) {
      const int64_t unit = b * U + u;
      scalar_t* column = panel + g * U + u;
      const scalar_t* row = s.weight_hh + (g * H + unit) * H;
      for (int64_t k = 0; k < H; ++k) column[k * 4 * U] = unit < H ? row[k] : scalar_t(0);
    }
  }
}

// Unit block b of one step: the recurrent products of a few rows at a time, each followed at once by the
// element-wise work of those rows (their pre-activations are still in L1).
template <typename scalar_t>
void forward_block(const ForwardStep<scalar_t>& s, int64_t b) {
  using V = Vec<scalar_t>;
  constexpr int64_t U = V::size();
  const int64_t H = s.hidden, unit = b * U, n = std::min<int64_t>(U, H - unit), step_rows = block_rows(s.size);
  const scalar_t* panel = s.panels + b * H * 4 * U;
  const V zero(0), scale(s.scale);
  alignas(64) scalar_t products[kBlockRows * 4 * U];
  alignas(64) bits_t<scalar_t> random[kBlockRows * 2 * U];
  const scalar_t* h_rows[kBlockRows];
  for (int64_t r0 = 0; r0 < s.size; r0 += step_rows) {
    const int64_t rows = std::min(step_rows, s.size - r0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r;
      h_rows[r] = row < s.continuing ? s.h_prev + row * H : s.h0 + row * H;
    }
    if (s.noisy) gate_bits<scalar_t, kBlockRows>(s.key0, s.key1, s.start + r0, rows, unit, random);
    panel_rows(panel, h_rows, rows, 4, H, products, 4 * U);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r, packed_row = s.start + row;
      const scalar_t* pre = s.gate_inputs + packed_row * 4 * H + unit;
      const scalar_t* product = products + r * 4 * U;
      V a_i = V::loadu(product) + load(pre, n), a_f = V::loadu(product + U) + load(pre + H, n);
      if (s.noisy) {
        a_i = a_i + s.noise(random + r * 2 * U, n);
        a_f = a_f + s.noise(random + r * 2 * U + U, n);
      }
      const V i = s.hard ? a_i.ge(zero) : sigmoid(a_i * scale);
      const V f = s.hard ? a_f.ge(zero) : sigmoid(a_f * scale);
      const V g = gate_tanh(V::loadu(product + 2 * U) + load(pre + 2 * H, n));
      const V o = sigmoid(V::loadu(product + 3 * U) + load(pre + 3 * H, n));
      const scalar_t* c_row = row < s.continuing ? s.c_prev + row * H : s.c0 + row * H;
      const V c = f * load(c_row + unit, n) + i * g;
      const V tanh_c = gate_tanh(c);
      scalar_t* gates = s.gates + packed_row * 4 * H + unit;
      store(i, gates, n);
      store(f, gates + H, n);
      store(g, gates + 2 * H, n);
      store(o, gates + 3 * H, n);
      store(c, s.cells + packed_row * H + unit, n);
      store(tanh_c, s.tanh_cells + packed_row * H + unit, n);
      store(o * tanh_c, s.output + packed_row * H + unit, n);
    }
  }
}

// The whole forward sequence: one parallel region, each thread owning (and packing) a range of unit blocks,
// a barrier after every step (the next step's products read every unit of h).
template <typename scalar_t>
void forward_loop(ForwardStep<scalar_t> step, const Schedule& schedule, int threads) {
  const int64_t hidden = step.hidden, blocks = (hidden + Vec<scalar_t>::size() - 1) / Vec<scalar_t>::size();
  const Tensor panels = at::empty({blocks * hidden * 4 * Vec<scalar_t>::size()},
                                  at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value));
  step.panels = panels.data_ptr<scalar_t>();
#pragma omp parallel num_threads(threads) firstprivate(step)
  {
    const auto [first, last] = share(blocks, omp_get_thread_num(), omp_get_num_threads());
    for (int64_t b = first; b < last; ++b) pack_forward_block(step, b);  // read only by this thread
    for (size_t k = 0; k < schedule.order.size(); ++k) {
      const int64_t previous = schedule.previous[k];
      step.start = schedule.offsets[k];
      step.size = schedule.sizes[k];
      step.continuing = schedule.continuing(k);
      if (previous >= 0) {
        step.h_prev = step.output + schedule.offsets[previous] * hidden;
        step.c_prev = step.cells + schedule.offsets[previous] * hidden;
      }
      for (int64_t b = first; b < last; ++b) forward_block(step, b);
#pragma omp barrier
    }
  }
}

// --------------------------------------------------------------------------------------- backward pass

// A thread's share of the hidden units going back, in chunks of at most four vectors: units
// [first * U, first * U + vectors * U) (the last chunk may end past H).
struct Chunk {
  int64_t first, vectors;
};

std::vector<Chunk> chunks_of(int64_t first, int64_t last) {
  std::vector<Chunk> chunks;
  for (int64_t v = first; v < last; v += 4) chunks.push_back({v, std::min<int64_t>(4, last - v)});
  return chunks;
}

// Everything one backward step needs (step = the one whose gradients are made; `next` = the step processed
// after it going forward, whose pre-activation gradients dG reach h of this step through W_hh).
template <typename scalar_t>
struct BackwardStep {
  const scalar_t* weight_hh;        // (4H, H)
  scalar_t* panels;                 // chunk panels: [4H][vectors * U] at offset 4H * first * U
  const scalar_t* next_grad_gates;  // dG of the next step (rows [0, next_size)), or null
  int64_t next_size;
  scalar_t* dh;                     // (B, H): gradient reaching h; rows of sequences still to come hold grad_h_n
  scalar_t* dc;                     // (B, H): carried cell gradient
  const scalar_t* grad_output;      // rows of this step (row stride grad_output_stride) or null
  int64_t grad_output_stride;
  const scalar_t* gates;            // this step's rows
  const scalar_t* tanh_cells;
  const scalar_t* c_prev;           // rows [0, continuing): previous step's cells; beyond: c0
  const scalar_t* c0;
  scalar_t* grad_gates;             // this step's rows
  int64_t size, continuing, hidden;
  scalar_t scale;
  bool hard;
  bool elementwise;                 // false: only the product (the gradient of h0 after the last step)
};

// The backward panel of a chunk: for every row j of W_hh, its weights of the chunk's units, zero past H.
template <typename scalar_t>
void pack_backward_chunk(const BackwardStep<scalar_t>& s, const Chunk& chunk) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t H = s.hidden, width = chunk.vectors * U, unit = chunk.first * U;
  const int64_t units = std::min(width, H - unit);
  scalar_t* panel = s.panels + 4 * H * unit;
  for (int64_t j = 0; j < 4 * H; ++j) {
    std::copy_n(s.weight_hh + j * H + unit, units, panel + j * width);
    std::fill(panel + j * width + units, panel + (j + 1) * width, scalar_t(0));
  }
}

// dh rows [0, next_size) of the chunk's units = dG_next @ W_hh[:, units], a few rows at a time.
template <typename scalar_t>
void backward_product(const BackwardStep<scalar_t>& s, const Chunk& chunk) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t H = s.hidden, J = 4 * H, unit = chunk.first * U, width = chunk.vectors * U;
  const int64_t units = std::min(width, H - unit), step_rows = block_rows(s.next_size);
  const scalar_t* panel = s.panels + J * unit;
  alignas(64) scalar_t products[kBlockRows * 4 * U];
  const scalar_t* rows_of_dG[kBlockRows];
  for (int64_t r0 = 0; r0 < s.next_size; r0 += step_rows) {
    const int64_t rows = std::min(step_rows, s.next_size - r0);
    for (int64_t r = 0; r < rows; ++r) rows_of_dG[r] = s.next_grad_gates + (r0 + r) * J;
    panel_rows(panel, rows_of_dG, rows, chunk.vectors, J, products, width);
    for (int64_t r = 0; r < rows; ++r) std::copy_n(products + r * width, units, s.dh + (r0 + r) * H + unit);
  }
}

// The local derivatives of this step for the chunk's units: dG rows, and dc carried to the step before.
template <typename scalar_t>
void backward_elementwise(const BackwardStep<scalar_t>& s, const Chunk& chunk) {
  using V = Vec<scalar_t>;
  constexpr int64_t U = V::size();
  const int64_t H = s.hidden, end = std::min(H, (chunk.first + chunk.vectors) * U);
  const V zero(0), one(1), scale(s.scale);
  for (int64_t row = 0; row < s.size; ++row) {
    const scalar_t* gates = s.gates + row * 4 * H;
    scalar_t* grad = s.grad_gates + row * 4 * H;
    const scalar_t* c_prev = row < s.continuing ? s.c_prev + row * H : s.c0 + row * H;
    for (int64_t unit = chunk.first * U; unit < end; unit += U) {
      const int64_t n = std::min<int64_t>(U, H - unit);
      const V i = load(gates + unit, n), f = load(gates + H + unit, n);
      const V g = load(gates + 2 * H + unit, n), o = load(gates + 3 * H + unit, n);
      const V tanh_c = load(s.tanh_cells + row * H + unit, n);
      V dh = load(s.dh + row * H + unit, n);
      if (s.grad_output) dh = dh + load(s.grad_output + row * s.grad_output_stride + unit, n);
      const V dc = load(s.dc + row * H + unit, n) + dh * (o * (one - tanh_c * tanh_c));
      const V d_i = s.hard ? zero : dc * g * (i * (one - i) * scale);
      const V d_f = s.hard ? zero : dc * load(c_prev + unit, n) * (f * (one - f) * scale);
      store(d_i, grad + unit, n);
      store(d_f, grad + H + unit, n);
      store(dc * i * (one - g * g), grad + 2 * H + unit, n);
      store(dh * tanh_c * (o * (one - o)), grad + 3 * H + unit, n);
      store(dc * f, s.dc + row * H + unit, n);
    }
  }
}

// The whole backward sequence, in reverse processing order, one parallel region and a barrier per step (the
// next round's products read every column of this round's dG); one more round (k = -1) makes the gradient
// of h0 from the first step's dG. Threads own hidden units in whole vectors, evened out.
template <typename scalar_t>
void backward_loop(BackwardStep<scalar_t> step, const Schedule& schedule, const scalar_t* grad_output,
                   const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells, Tensor& grad_gates,
                   int threads) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t hidden = step.hidden, vectors = (hidden + U - 1) / U;
  const Tensor panels = at::empty({4 * hidden * vectors * U}, gates.options());
  step.panels = panels.data_ptr<scalar_t>();
  const int64_t steps = static_cast<int64_t>(schedule.order.size());
  scalar_t* grad_gates_data = grad_gates.data_ptr<scalar_t>();
#pragma omp parallel num_threads(threads) firstprivate(step)
  {
    const auto [first, last] = share(vectors, omp_get_thread_num(), omp_get_num_threads());
    const std::vector<Chunk> chunks = chunks_of(first, last);
    for (const Chunk& chunk : chunks) pack_backward_chunk(step, chunk);  // read only by this thread
    for (int64_t k = steps - 1; k >= -1; --k) {
      const int64_t next = k + 1 < steps ? k + 1 : -1;
      step.next_grad_gates = next >= 0 ? grad_gates_data + schedule.offsets[next] * 4 * hidden : nullptr;
      step.next_size = next >= 0 ? schedule.sizes[next] : 0;
      step.elementwise = k >= 0;
      if (k >= 0) {
        const int64_t offset = schedule.offsets[k], previous = schedule.previous[k];
        step.size = schedule.sizes[k];
        step.continuing = schedule.continuing(k);
        step.grad_output = grad_output ? grad_output + offset * step.grad_output_stride : nullptr;
        step.gates = gates.data_ptr<scalar_t>() + offset * 4 * hidden;
        step.tanh_cells = tanh_cells.data_ptr<scalar_t>() + offset * hidden;
        step.c_prev = previous >= 0 ? cells.data_ptr<scalar_t>() + schedule.offsets[previous] * hidden : nullptr;
        step.grad_gates = grad_gates_data + offset * 4 * hidden;
      }
      for (const Chunk& chunk : chunks) {
        if (step.next_grad_gates) backward_product(step, chunk);
        if (step.elementwise) backward_elementwise(step, chunk);
      }
#pragma omp barrier
    }
  }
}

// ----------------------------------------------------------------------- inference with stored gate forms

// How one gate's block of the hidden-to-hidden weights is stored (g2lstm.compress): dense rows (H, H), the
// low-rank factors u (H, k) and v (k, H), or int8 codes (H, H) times a step. At inference the products are
// formed from the stored form itself: h v^T then (h v^T) u^T for low rank, the codes converted block by block
// for low precision, so no dense matrix is rebuilt.
enum GateKind { kDense = 0, kLowRank = 1, kCodes = 2 };

template <typename scalar_t>
struct GateForm {
  GateKind kind = kDense;
  const scalar_t* dense = nullptr;  // kDense
  const scalar_t* u = nullptr;      // kLowRank
  const scalar_t* v = nullptr;
  int64_t rank = 0;
  const int8_t* codes = nullptr;    // kCodes, stored transposed: (in, H), unit u of input k at k * H + u
  scalar_t step = 1;
};

// Everything one inference step needs; as ForwardStep without noise and without the saved quantities.
template <typename scalar_t>
struct InferenceStep {
  const scalar_t* gate_inputs;
  GateForm<scalar_t> forms[4];
  int group[4];                 // consecutive dense gates share one panel: the count at the first, 0 after it
  scalar_t* panels[4];          // per group: [unit block][K][count * U], K = H (dense) or rank (low rank)
  scalar_t* v_panels[4];        // low rank: [rank vectors][H][U] of v^T, for z = h v^T
  scalar_t* z[4];               // low rank: (B, rank rounded up to U) of this step
  const scalar_t* h_prev;
  const scalar_t* c_prev;
  const scalar_t* h0;
  const scalar_t* c0;
  scalar_t* gates;              // (N, 4H) or null
  scalar_t* cells;
  scalar_t* output;
  int64_t start, size, continuing, hidden;
  scalar_t scale;
  bool hard;
};

template <typename scalar_t>
int64_t padded_rank(const GateForm<scalar_t>& form) {
  constexpr int64_t U = Vec<scalar_t>::size();
  return (form.rank + U - 1) / U * U;
}

// Pack the panels of unit block b for the dense rows and the low-rank u. Codes are not copied: each step
// converts the block's codes to floats in a scratch panel of the thread, so their memory stays int8.
template <typename scalar_t>
void pack_inference_block(const InferenceStep<scalar_t>& s, int64_t b) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t H = s.hidden;
  for (int g = 0; g < 4; ++g) {
    const GateForm<scalar_t>& form = s.forms[g];
    if (form.kind == kCodes) continue;
    const int count = s.group[g];
    if (count == 0) continue;
    const int64_t K = form.kind == kLowRank ? form.rank : H, width = count * U;
    scalar_t* panel = s.panels[g] + b * K * width;
    for (int j = 0; j < count; ++j) {
      const scalar_t* source = form.kind == kLowRank ? form.u : s.forms[g + j].dense;
      for (int64_t u = 0; u < U; ++u) {
        const int64_t unit = b * U + u;
        for (int64_t k = 0; k < K; ++k) {
          panel[k * width + j * U + u] = unit < H ? source[unit * K + k] : scalar_t(0);
        }
      }
    }
  }
}

// Pack vector block c (columns [c*U, c*U + U) of v^T, i.e. rows of v) of a low-rank gate's v for z = h v^T.
template <typename scalar_t>
void pack_v_block(const InferenceStep<scalar_t>& s, int g, int64_t c) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const GateForm<scalar_t>& form = s.forms[g];
  const int64_t H = s.hidden;
  scalar_t* panel = s.v_panels[g] + c * H * U;
  for (int64_t u = 0; u < U; ++u) {
    const int64_t row = c * U + u;
    for (int64_t k = 0; k < H; ++k) panel[k * U + u] = row < form.rank ? form.v[row * H + k] : scalar_t(0);
  }
}

// The step's h rows: previous step's output for continuing rows, h0 beyond.
template <typename scalar_t>
void step_rows(const InferenceStep<scalar_t>& s, int64_t r0, int64_t rows, const scalar_t** out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = r0 + r;
    out[r] = row < s.continuing ? s.h_prev + row * s.hidden : s.h0 + row * s.hidden;
  }
}

// z[:, c*U .. c*U + U) = h v^T of low-rank gate g, all rows of the step.
template <typename scalar_t>
void low_rank_z(const InferenceStep<scalar_t>& s, int g, int64_t c) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t stride = padded_rank(s.forms[g]), step_rows_count = block_rows(s.size);
  const scalar_t* h_rows[kBlockRows];
  for (int64_t r0 = 0; r0 < s.size; r0 += step_rows_count) {
    const int64_t rows = std::min(step_rows_count, s.size - r0);
    step_rows(s, r0, rows, h_rows);
    panel_rows(s.v_panels[g] + c * s.hidden * U, h_rows, rows, 1, s.hidden, s.z[g] + r0 * stride + c * U, stride);
  }
}

// Unit block b of one step: each gate's product from its stored form, then the element-wise update.
template <typename scalar_t>
void inference_block(const InferenceStep<scalar_t>& s, int64_t b, scalar_t* scratch) {
  using V = Vec<scalar_t>;
  constexpr int64_t U = V::size();
  const int64_t H = s.hidden, unit = b * U, n = std::min<int64_t>(U, H - unit), step_rows_count = block_rows(s.size);
  const V zero(0), scale(s.scale);
  const scalar_t* gate_panels[4];
  for (int g = 0; g < 4; ++g) {
    const GateForm<scalar_t>& form = s.forms[g];
    if (form.kind == kCodes) {  // this block's codes as floats, once per step for all its rows
      scalar_t* panel = scratch + g * H * U;
      if (n == U) {  // codes are (in, H): the block's U units are contiguous per k
        for (int64_t k = 0; k < H; ++k) {
          const int8_t* codes = form.codes + k * H + unit;
#pragma GCC unroll 16
          for (int64_t u = 0; u < U; ++u) panel[k * U + u] = scalar_t(codes[u]);
        }
      } else {
        for (int64_t k = 0; k < H; ++k) {
          for (int64_t u = 0; u < U; ++u) panel[k * U + u] = u < n ? scalar_t(form.codes[k * H + unit + u]) : 0;
        }
      }
      gate_panels[g] = panel;
    } else if (s.group[g] > 0) {
      gate_panels[g] = s.panels[g] + b * (form.kind == kLowRank ? form.rank : H) * s.group[g] * U;
    }
  }
  alignas(64) scalar_t products[kBlockRows * 4 * U];
  const scalar_t* h_rows[kBlockRows];
  const scalar_t* z_rows[kBlockRows];
  for (int64_t r0 = 0; r0 < s.size; r0 += step_rows_count) {
    const int64_t rows = std::min(step_rows_count, s.size - r0);
    step_rows(s, r0, rows, h_rows);
    for (int g = 0; g < 4; ++g) {
      const GateForm<scalar_t>& form = s.forms[g];
      if (form.kind == kLowRank) {
        for (int64_t r = 0; r < rows; ++r) z_rows[r] = s.z[g] + (r0 + r) * padded_rank(form);
        panel_rows(gate_panels[g], z_rows, rows, 1, form.rank, products + g * U, 4 * U);
      } else if (form.kind == kCodes || s.group[g] > 0) {
        const int count = form.kind == kCodes ? 1 : s.group[g];
        panel_rows(gate_panels[g], h_rows, rows, count, H, products + g * U, 4 * U);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r, packed_row = s.start + row;
      const scalar_t* pre = s.gate_inputs + packed_row * 4 * H + unit;
      const scalar_t* product = products + r * 4 * U;
      V a[4];
      for (int g = 0; g < 4; ++g) a[g] = V::loadu(product + g * U) * V(s.forms[g].step) + load(pre + g * H, n);
      const V i = s.hard ? a[0].ge(zero) : sigmoid(a[0] * scale);
      const V f = s.hard ? a[1].ge(zero) : sigmoid(a[1] * scale);
      const V g = gate_tanh(a[2]);
      const V o = sigmoid(a[3]);
      const scalar_t* c_row = row < s.continuing ? s.c_prev + row * H : s.c0 + row * H;
      const V c = f * load(c_row + unit, n) + i * g;
      if (s.gates) {
        scalar_t* gates = s.gates + packed_row * 4 * H + unit;
        store(i, gates, n);
        store(f, gates + H, n);
        store(g, gates + 2 * H, n);
        store(o, gates + 3 * H, n);
      }
      store(c, s.cells + packed_row * H + unit, n);
      store(o * gate_tanh(c), s.output + packed_row * H + unit, n);
    }
  }
}

// The whole sequence at inference: per step, the low-rank gates' h v^T (shared out by vector blocks, then a
// barrier), then every unit block's products and update (then a barrier).
template <typename scalar_t>
void inference_loop(InferenceStep<scalar_t> step, const Schedule& schedule, int threads) {
  constexpr int64_t U = Vec<scalar_t>::size();
  const int64_t hidden = step.hidden, batch = schedule.sizes.empty() ? 0 : *std::max_element(
      schedule.sizes.begin(), schedule.sizes.end());
  const int64_t blocks = (hidden + U - 1) / U;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  std::vector<Tensor> buffers;
  std::vector<std::pair<int, int64_t>> z_items;  // (gate, vector block of its rank)
  for (int g = 0; g < 4; ++g) {
    const GateForm<scalar_t>& form = step.forms[g];
    step.panels[g] = step.v_panels[g] = step.z[g] = nullptr;
    const bool continues_group = form.kind == kDense && g > 0 && step.forms[g - 1].kind == kDense;
    step.group[g] = continues_group ? 0 : 1;
    if (continues_group) {
      int leader = g - 1;
      while (step.group[leader] == 0) --leader;
      ++step.group[leader];
    }
    if (form.kind == kCodes) continue;
    if (continues_group) continue;
    const int64_t K = form.kind == kLowRank ? form.rank : hidden;
    const int64_t count = form.kind == kDense ? std::count_if(step.forms + g, step.forms + 4,
        [](const auto& f) { return f.kind == kDense; }) : 1;  // at most the dense gates that follow
    buffers.push_back(at::empty({blocks * K * count * U}, options));
    step.panels[g] = buffers.back().data_ptr<scalar_t>();
    if (form.kind == kLowRank) {
      const int64_t columns = padded_rank(form);
      buffers.push_back(at::empty({columns * hidden}, options));
      step.v_panels[g] = buffers.back().data_ptr<scalar_t>();
      buffers.push_back(at::empty({batch * columns}, options));
      step.z[g] = buffers.back().data_ptr<scalar_t>();
      for (int64_t c = 0; c < columns / U; ++c) z_items.emplace_back(g, c);
    }
  }
  const bool codes = std::any_of(step.forms, step.forms + 4, [](const auto& f) { return f.kind == kCodes; });
  const int64_t z_count = static_cast<int64_t>(z_items.size());
#pragma omp parallel num_threads(threads) firstprivate(step)
  {
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
    const auto [first, last] = share(blocks, thread, team);
    const auto [z_first, z_last] = share(z_count, thread, team);
    std::vector<scalar_t> scratch(codes ? 4 * hidden * U : 0);
    for (int64_t b = first; b < last; ++b) pack_inference_block(step, b);
    for (int64_t item = z_first; item < z_last; ++item) pack_v_block(step, z_items[item].first, z_items[item].second);
#pragma omp barrier
    for (size_t k = 0; k < schedule.order.size(); ++k) {
      const int64_t previous = schedule.previous[k];
      step.start = schedule.offsets[k];
      step.size = schedule.sizes[k];
      step.continuing = schedule.continuing(k);
      if (previous >= 0) {
        step.h_prev = step.output + schedule.offsets[previous] * hidden;
        step.c_prev = step.cells + schedule.offsets[previous] * hidden;
      }
      if (z_count > 0) {
        for (int64_t item = z_first; item < z_last; ++item) low_rank_z(step, z_items[item].first, z_items[item].second);
#pragma omp barrier
      }
      for (int64_t b = first; b < last; ++b) inference_block(step, b, scratch.data());
#pragma omp barrier
    }
  }
}

// ------------------------------------------------------------------------------------------ entry points

void check_sequence(const Tensor& gate_inputs, const Tensor& weight_hh,
                    const std::vector<int64_t>& batch_sizes) {
  TORCH_CHECK(gate_inputs.device().is_cpu(), "the compiled G2-LSTM loop runs on CPU tensors only");
  TORCH_CHECK(!batch_sizes.empty(), "batch_sizes must not be empty");
  int64_t rows = 0;
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    TORCH_CHECK(batch_sizes[t] > 0 && (t == 0 || batch_sizes[t] <= batch_sizes[t - 1]),
                "batch_sizes must be positive and non-increasing");
    rows += batch_sizes[t];
  }
  TORCH_CHECK(gate_inputs.dim() == 2 && gate_inputs.size(0) == rows &&
                  gate_inputs.size(1) == 4 * weight_hh.size(1) && weight_hh.size(0) == 4 * weight_hh.size(1),
              "gate_inputs must have shape (sum(batch_sizes), 4H) and weight_hh (4H, H), got ",
              gate_inputs.sizes(), " and ", weight_hh.sizes());
}

// The final state of every sequence: row r of its last processed step.
Tensor final_states(const Tensor& values, const Tensor& initial, const Schedule& schedule) {
  Tensor result = initial.clone(at::MemoryFormat::Contiguous);
  for (size_t k = 0; k < schedule.order.size(); ++k) {
    const bool last = k + 1 == schedule.order.size();
    const int64_t size = schedule.sizes[k];
    const int64_t ending_from = last ? 0 : std::min(size, schedule.sizes[k + 1]);
    if (ending_from < size) {
      result.narrow(0, ending_from, size - ending_from)
          .copy_(values.narrow(0, schedule.offsets[k] + ending_from, size - ending_from));
    }
  }
  return result;
}

// Returns (output, h_n, c_n, gates, cells, tanh_cells): the kernel's outputs, then what the backward pass
// needs besides them (rows in packed order; c_t of every step, tanh(c_t)).
std::vector<Tensor> sequence_forward(const Tensor& gate_inputs_in, const Tensor& h0_in, const Tensor& c0_in,
                                     const Tensor& weight_hh_in, const std::vector<int64_t>& batch_sizes,
                                     bool reverse, double scale, bool hard, std::optional<int64_t> noise_seed,
                                     double noise_p, double noise_eps) {
  check_sequence(gate_inputs_in, weight_hh_in, batch_sizes);
  const Tensor gate_inputs = gate_inputs_in.contiguous(), weight_hh = weight_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  TORCH_CHECK(gate_inputs.size(0) < (int64_t(1) << 32), "gate noise is defined for fewer than 2**32 rows");
  const int64_t hidden = weight_hh.size(1), rows = gate_inputs.size(0);
  Tensor gates = at::empty_like(gate_inputs);
  Tensor output = at::empty({rows, hidden}, gate_inputs.options());
  Tensor cells = at::empty_like(output), tanh_cells = at::empty_like(output);
  const Schedule schedule(batch_sizes, reverse);
  const int threads = team_size();
  AT_DISPATCH_FLOATING_TYPES(gate_inputs.scalar_type(), "g2lstm_sequence_forward", [&] {
    const uint64_t key = noise_seed.value_or(0);
    ForwardStep<scalar_t> step{gate_inputs.data_ptr<scalar_t>(), noise_seed.has_value(),
                               uint32_t(key & 0xFFFFFFFFu), uint32_t(key >> 32 & 0xFFFFFFFFu),
                               {static_cast<scalar_t>(noise_p), static_cast<scalar_t>(noise_eps)},
                               weight_hh.data_ptr<scalar_t>(), nullptr, nullptr, nullptr,
                               h0.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                               gates.data_ptr<scalar_t>(), cells.data_ptr<scalar_t>(),
                               tanh_cells.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
                               0, 0, 0, hidden, static_cast<scalar_t>(scale), hard};
    forward_loop(step, schedule, threads);
  });
  return {output, final_states(output, h0, schedule), final_states(cells, c0, schedule), gates, cells,
          tanh_cells};
}

// Row-contiguous (stride 1 along the hidden axis) version of an optional gradient.
Tensor rows_of(const std::optional<Tensor>& grad) {
  if (!grad.has_value() || !grad->defined()) return Tensor();
  return grad->stride(1) == 1 ? *grad : grad->contiguous();
}

// The hidden state each row's step started from (previous step's output row, or h0), rows in packed order.
Tensor previous_states(const Tensor& output, const Tensor& h0, const Schedule& schedule) {
  Tensor result = at::empty_like(output);
  for (size_t k = 0; k < schedule.order.size(); ++k) {
    const int64_t size = schedule.sizes[k], continuing = schedule.continuing(k);
    Tensor rows = result.narrow(0, schedule.offsets[k], size);
    if (continuing > 0) {
      rows.narrow(0, 0, continuing).copy_(output.narrow(0, schedule.offsets[schedule.previous[k]], continuing));
    }
    if (continuing < size) rows.narrow(0, continuing, size - continuing).copy_(h0.narrow(0, continuing, size - continuing));
  }
  return result;
}

// Returns (grad of gate_inputs, grad of h0, grad of c0, grad of weight_hh or undefined).
std::vector<Tensor> sequence_backward(const std::optional<Tensor>& grad_output_in,
                                      const std::optional<Tensor>& grad_h_n,
                                      const std::optional<Tensor>& grad_c_n, const Tensor& gates,
                                      const Tensor& cells, const Tensor& tanh_cells, const Tensor& output,
                                      const Tensor& h0_in, const Tensor& c0_in, const Tensor& weight_hh_in,
                                      const std::vector<int64_t>& batch_sizes, bool reverse, double scale,
                                      bool hard, bool weight_grad) {
  check_sequence(gates, weight_hh_in, batch_sizes);
  const Tensor weight_hh = weight_hh_in.contiguous(), h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  const int64_t hidden = weight_hh.size(1), batch = batch_sizes[0];
  const auto state = [&](const std::optional<Tensor>& grad) {
    return grad.has_value() && grad->defined() ? grad->clone(at::MemoryFormat::Contiguous)
                                               : at::zeros({batch, hidden}, gates.options());
  };
  Tensor dh = state(grad_h_n), dc = state(grad_c_n);
  const Tensor grad_output = rows_of(grad_output_in);
  Tensor grad_gates = at::empty_like(gates);
  const Schedule schedule(batch_sizes, reverse);
  const int threads = team_size();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "g2lstm_sequence_backward", [&] {
    BackwardStep<scalar_t> step{weight_hh.data_ptr<scalar_t>(), nullptr, nullptr, 0, dh.data_ptr<scalar_t>(),
                                dc.data_ptr<scalar_t>(), nullptr,
                                grad_output.defined() ? grad_output.stride(0) : 0, nullptr, nullptr, nullptr,
                                c0.data_ptr<scalar_t>(), nullptr, 0, 0, hidden, static_cast<scalar_t>(scale),
                                hard, true};
    const scalar_t* grad_output_data = grad_output.defined() ? grad_output.data_ptr<scalar_t>() : nullptr;
    backward_loop(step, schedule, grad_output_data, gates, cells, tanh_cells, grad_gates, threads);
  });
  Tensor grad_weight;
  // (h^T dG)^T rather than dG^T h: the same product, markedly faster with MKL at LSTM shapes.
  if (weight_grad) grad_weight = at::mm(previous_states(output, h0, schedule).t(), grad_gates).t();
  return {grad_gates, dh, dc, grad_weight};
}

// Inference over a packed sequence with the hidden-to-hidden weights in their stored forms (see GateForm):
// forms[g] is (kind, tensors) for gate g = i, f, g, o: (0, [rows (H, H)]), (1, [u (H, k), v (k, H)]) or
// (2, [int8 codes transposed (H_in, H), step]). Returns (output, h_n, c_n, gates or undefined).
std::vector<Tensor> sequence_inference(const Tensor& gate_inputs_in, const Tensor& h0_in, const Tensor& c0_in,
                                       const std::vector<int64_t>& kinds, const std::vector<Tensor>& tensors,
                                       const std::vector<int64_t>& batch_sizes, bool reverse, double scale,
                                       bool hard, bool keep_gates) {
  TORCH_CHECK(kinds.size() == 4, "one form per gate");
  const Tensor gate_inputs = gate_inputs_in.contiguous(), h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  const int64_t hidden = h0.size(1), rows = gate_inputs.size(0);
  TORCH_CHECK(gate_inputs.dim() == 2 && gate_inputs.size(1) == 4 * hidden, "gate_inputs must be (N, 4H)");
  std::vector<Tensor> kept;  // contiguous copies alive for the call
  Tensor output = at::empty({rows, hidden}, gate_inputs.options()), cells = at::empty_like(output);
  Tensor gates = keep_gates ? at::empty_like(gate_inputs) : Tensor();
  const Schedule schedule(batch_sizes, reverse);
  const int threads = team_size();
  AT_DISPATCH_FLOATING_TYPES(gate_inputs.scalar_type(), "g2lstm_sequence_inference", [&] {
    InferenceStep<scalar_t> step{};
    size_t next = 0;
    for (int g = 0; g < 4; ++g) {
      GateForm<scalar_t>& form = step.forms[g];
      form.kind = static_cast<GateKind>(kinds[g]);
      if (form.kind == kDense) {
        kept.push_back(tensors.at(next++).contiguous());
        TORCH_CHECK(kept.back().sizes() == at::IntArrayRef({hidden, hidden}), "a dense block must be (H, H)");
        form.dense = kept.back().data_ptr<scalar_t>();
      } else if (form.kind == kLowRank) {
        kept.push_back(tensors.at(next++).contiguous());
        form.u = kept.back().data_ptr<scalar_t>();
        form.rank = kept.back().size(1);
        kept.push_back(tensors.at(next++).contiguous());
        TORCH_CHECK(kept.back().sizes() == at::IntArrayRef({form.rank, hidden}), "v must be (k, H)");
        form.v = kept.back().data_ptr<scalar_t>();
      } else {
        kept.push_back(tensors.at(next++).contiguous());
        TORCH_CHECK(kept.back().scalar_type() == at::kChar && kept.back().sizes() == at::IntArrayRef({hidden, hidden}),
                    "codes must be int8 (H, H), transposed");
        form.codes = kept.back().data_ptr<int8_t>();
        form.step = static_cast<scalar_t>(tensors.at(next++).item<double>());
      }
    }
    step.gate_inputs = gate_inputs.data_ptr<scalar_t>();
    step.h0 = h0.data_ptr<scalar_t>();
    step.c0 = c0.data_ptr<scalar_t>();
    step.gates = keep_gates ? gates.data_ptr<scalar_t>() : nullptr;
    step.cells = cells.data_ptr<scalar_t>();
    step.output = output.data_ptr<scalar_t>();
    step.hidden = hidden;
    step.scale = static_cast<scalar_t>(scale);
    step.hard = hard;
    inference_loop(step, schedule, threads);
  });
  return {output, final_states(output, h0, schedule), final_states(cells, c0, schedule), gates};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward", &sequence_forward, "G2-LSTM sequence forward (one direction of one layer)");
  module.def("backward", &sequence_backward, "G2-LSTM sequence backward through time");
  module.def("inference", &sequence_inference, "G2-LSTM sequence at inference from stored gate forms");
}
