// The sequence loops of the fused G2-LSTM kernel on CPU: forward and backward through time, one call each.
//
// Same contract and the same saved quantities as the Python loop of g2lstm/kernels/fused.py. Each step is
// the recurrent matrix product (oneDNN-prepacked weights through the dispatcher, or at::mm) followed by
// one vectorised pass over the step's (batch x hidden) elements that does all the element-wise work of
// the step: the gate noise (from random bits, as g2lstm.functional.noise_from_bits), gate nonlinearities
// (input and forget gates sigmoid(scale * a) or 1[a >= 0]), cell and hidden updates going forward; the
// local derivatives and the gradients of the pre-activations going back. Packed input: step t has the
// first batch_sizes[t] sequences; states are (B, H) buffers whose first rows are the active ones.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/python.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

using at::Tensor;

// Elements per parallel chunk of a step's element-wise pass; smaller passes run on one thread.
constexpr int64_t kGrainElements = 8192;

// add + rows @ matrix^T (add may be undefined) for row blocks of at most `batch` rows.
class StepProduct {
 public:
  StepProduct(const Tensor& matrix, int64_t batch, bool onednn) : onednn_(onednn) {
    if (onednn_) {
      static auto reorder = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                                .typed<Tensor(const Tensor&, std::optional<int64_t>)>();
      matrix_ = reorder.call(matrix, batch);
    } else {
      matrix_ = matrix.t();
    }
  }

  Tensor operator()(const Tensor& rows, const Tensor& add) const {
    if (!onednn_) {
      return add.defined() ? at::addmm(add, rows, matrix_) : at::mm(rows, matrix_);
    }
    if (add.defined()) {
      static auto binary = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
                               .typed<Tensor(const Tensor&, const Tensor&, const Tensor&,
                                             const std::optional<Tensor>&, c10::string_view)>();
      return binary.call(rows, add, matrix_, std::nullopt, "add");
    }
    static auto plain = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                            .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                          c10::string_view, c10::List<std::optional<c10::Scalar>>,
                                          std::optional<c10::string_view>)>();
    return plain.call(rows, matrix_, std::nullopt, "none", c10::List<std::optional<c10::Scalar>>(),
                      c10::string_view(""));
  }

 private:
  bool onednn_;
  Tensor matrix_;
};

// Start row of each step in the packed layout, and the order in which the forward pass visits steps.
std::vector<int64_t> row_offsets(const std::vector<int64_t>& batch_sizes) {
  std::vector<int64_t> offsets(batch_sizes.size(), 0);
  for (size_t t = 1; t < batch_sizes.size(); ++t) offsets[t] = offsets[t - 1] + batch_sizes[t - 1];
  return offsets;
}

std::vector<int64_t> forward_order(int64_t steps, bool reverse) {
  std::vector<int64_t> order(steps);
  for (int64_t k = 0; k < steps; ++k) order[k] = reverse ? steps - 1 - k : k;
  return order;
}

template <typename scalar_t>
using Vec = at::vec::Vectorized<scalar_t>;

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

template <typename scalar_t>
Vec<scalar_t> sigmoid(const Vec<scalar_t>& x) {
  return (Vec<scalar_t>(1) + x.neg().exp()).reciprocal();
}

// The random bits of one uniform (g2lstm.functional.random_bits): int32 (24 bits used) for float, int64
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

// Pointers of one step's forward pass: `pre` (size, 4H) pre-activations, `bits` (size, 2H) the random
// bits of the input- and forget-gate noise (null: no noise), `h`, `c` the carried states (rows [0, size)
// active, updated in place), the rest rows of this step in the packed outputs.
template <typename scalar_t>
struct ForwardStep {
  const scalar_t* pre;
  const bits_t<scalar_t>* bits;
  GateNoise<scalar_t> noise;
  scalar_t* h;
  scalar_t* c;
  scalar_t* gates;
  scalar_t* tanh_cells;
  scalar_t* output;
  scalar_t* h_prev;
  scalar_t* c_prev;
  int64_t hidden;
  scalar_t scale;
  bool hard;
};

template <typename scalar_t>
void forward_rows(const ForwardStep<scalar_t>& s, int64_t begin, int64_t end) {
  using V = Vec<scalar_t>;
  const int64_t H = s.hidden;
  const V zero(0), scale(s.scale);
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* pre = s.pre + b * 4 * H;
    const bits_t<scalar_t>* bits = s.bits ? s.bits + b * 2 * H : nullptr;
    scalar_t* gates = s.gates + b * 4 * H;
    const int64_t row = b * H;
    for (int64_t j = 0; j < H; j += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), H - j);
      V a_i = load(pre + j, n), a_f = load(pre + H + j, n);
      if (bits) {
        a_i = a_i + s.noise(bits + j, n);
        a_f = a_f + s.noise(bits + H + j, n);
      }
      const V i = s.hard ? a_i.ge(zero) : sigmoid(a_i * scale);
      const V f = s.hard ? a_f.ge(zero) : sigmoid(a_f * scale);
      const V g = load(pre + 2 * H + j, n).tanh();
      const V o = sigmoid(load(pre + 3 * H + j, n));
      const V h_prev = load(s.h + row + j, n), c_prev = load(s.c + row + j, n);
      const V c = f * c_prev + i * g;
      const V tanh_c = c.tanh();
      const V h = o * tanh_c;
      store(i, gates + j, n);
      store(f, gates + H + j, n);
      store(g, gates + 2 * H + j, n);
      store(o, gates + 3 * H + j, n);
      store(h_prev, s.h_prev + row + j, n);
      store(c_prev, s.c_prev + row + j, n);
      store(c, s.c + row + j, n);
      store(h, s.h + row + j, n);
      store(h, s.output + row + j, n);
      store(tanh_c, s.tanh_cells + row + j, n);
    }
  }
}

// Pointers of one step's backward pass: `dh` (size, H) the gradient reaching h_t through the recurrence,
// `dc` the carried cell gradient (both updated in place: dc becomes the gradient of c_{t-1}), the saved
// rows of this step, and `grad_output` (row stride `grad_output_stride`, null when unused).
template <typename scalar_t>
struct BackwardStep {
  scalar_t* dh;
  scalar_t* dc;
  const scalar_t* grad_output;
  int64_t grad_output_stride;
  const scalar_t* gates;
  const scalar_t* tanh_cells;
  const scalar_t* c_prev;
  scalar_t* grad_gates;
  int64_t hidden;
  scalar_t scale;
  bool hard;
};

template <typename scalar_t>
void backward_rows(const BackwardStep<scalar_t>& s, int64_t begin, int64_t end) {
  using V = Vec<scalar_t>;
  const int64_t H = s.hidden;
  const V zero(0), one(1), scale(s.scale);
  for (int64_t b = begin; b < end; ++b) {
    const scalar_t* gates = s.gates + b * 4 * H;
    scalar_t* grad = s.grad_gates + b * 4 * H;
    const scalar_t* grad_output = s.grad_output ? s.grad_output + b * s.grad_output_stride : nullptr;
    const int64_t row = b * H;
    for (int64_t j = 0; j < H; j += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), H - j);
      const V i = load(gates + j, n), f = load(gates + H + j, n);
      const V g = load(gates + 2 * H + j, n), o = load(gates + 3 * H + j, n);
      const V tanh_c = load(s.tanh_cells + row + j, n);
      V dh = load(s.dh + row + j, n);
      if (grad_output) dh = dh + load(grad_output + j, n);
      const V dc = load(s.dc + row + j, n) + dh * (o * (one - tanh_c * tanh_c));
      const V d_i = s.hard ? zero : dc * g * (i * (one - i) * scale);
      const V d_f = s.hard ? zero : dc * load(s.c_prev + row + j, n) * (f * (one - f) * scale);
      const V d_g = dc * i * (one - g * g);
      const V d_o = dh * tanh_c * (o * (one - o));
      store(d_i, grad + j, n);
      store(d_f, grad + H + j, n);
      store(d_g, grad + 2 * H + j, n);
      store(d_o, grad + 3 * H + j, n);
      store(dc * f, s.dc + row + j, n);
    }
  }
}

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
                  gate_inputs.size(1) == 4 * weight_hh.size(1),
              "gate_inputs must have shape (sum(batch_sizes), 4H), got ", gate_inputs.sizes());
}

// Row-contiguous (stride 1 along the hidden axis) version of an optional gradient.
Tensor rows_of(const std::optional<Tensor>& grad) {
  if (!grad.has_value() || !grad->defined()) return Tensor();
  return grad->stride(1) == 1 ? *grad : grad->contiguous();
}

// Returns (output, h_n, c_n, gates, tanh_cells, h_prev, c_prev): the kernel's outputs, then what the
// backward pass needs, rows in packed order.
std::vector<Tensor> sequence_forward(const Tensor& gate_inputs_in, const Tensor& h0, const Tensor& c0,
                                     const Tensor& weight_hh, const std::vector<int64_t>& batch_sizes,
                                     bool reverse, double scale, bool hard, bool onednn,
                                     const std::optional<Tensor>& bits_in, double noise_p,
                                     double noise_eps) {
  check_sequence(gate_inputs_in, weight_hh, batch_sizes);
  const Tensor gate_inputs = gate_inputs_in.contiguous();
  const Tensor bits = bits_in.has_value() && bits_in->defined() ? bits_in->contiguous() : Tensor();
  const auto bits_type = gate_inputs.scalar_type() == at::kDouble ? at::kLong : at::kInt;
  TORCH_CHECK(!bits.defined() || (bits.dim() == 2 && bits.size(0) == gate_inputs.size(0) &&
                                  bits.size(1) == gate_inputs.size(1) / 2 && bits.scalar_type() == bits_type),
              "bits must be ", bits_type, " with gate_inputs' rows and 2H columns, got ", bits.scalar_type(),
              " ", bits.sizes());
  const int64_t hidden = weight_hh.size(1), rows = gate_inputs.size(0);
  Tensor h = h0.clone(at::MemoryFormat::Contiguous), c = c0.clone(at::MemoryFormat::Contiguous);
  Tensor gates = at::empty_like(gate_inputs);
  Tensor output = at::empty({rows, hidden}, gate_inputs.options());
  Tensor tanh_cells = at::empty_like(output), h_prev = at::empty_like(output);
  Tensor c_prev = at::empty_like(output);
  const StepProduct recurrent(weight_hh, batch_sizes[0], onednn);
  const auto offsets = row_offsets(batch_sizes);
  const int64_t grain = std::max<int64_t>(1, kGrainElements / hidden);
  AT_DISPATCH_FLOATING_TYPES(gate_inputs.scalar_type(), "g2lstm_sequence_forward", [&] {
    for (const int64_t t : forward_order(static_cast<int64_t>(batch_sizes.size()), reverse)) {
      const int64_t size = batch_sizes[t], start = offsets[t];
      const Tensor pre = recurrent(h.narrow(0, 0, size), gate_inputs.narrow(0, start, size)).contiguous();
      const ForwardStep<scalar_t> step{pre.data_ptr<scalar_t>(),
                                       bits.defined() ? bits.data_ptr<bits_t<scalar_t>>() + start * 2 * hidden
                                                      : nullptr,
                                       {static_cast<scalar_t>(noise_p), static_cast<scalar_t>(noise_eps)},
                                       h.data_ptr<scalar_t>(),
                                       c.data_ptr<scalar_t>(),
                                       gates.data_ptr<scalar_t>() + start * 4 * hidden,
                                       tanh_cells.data_ptr<scalar_t>() + start * hidden,
                                       output.data_ptr<scalar_t>() + start * hidden,
                                       h_prev.data_ptr<scalar_t>() + start * hidden,
                                       c_prev.data_ptr<scalar_t>() + start * hidden,
                                       hidden,
                                       static_cast<scalar_t>(scale),
                                       hard};
      at::parallel_for(0, size, grain, [&](int64_t begin, int64_t end) { forward_rows(step, begin, end); });
    }
  });
  return {output, h, c, gates, tanh_cells, h_prev, c_prev};
}

// Returns (grad of gate_inputs, grad of h0, grad of c0, grad of weight_hh or undefined).
std::vector<Tensor> sequence_backward(const std::optional<Tensor>& grad_output_in,
                                      const std::optional<Tensor>& grad_h_n,
                                      const std::optional<Tensor>& grad_c_n,
                                      const Tensor& gates, const Tensor& tanh_cells, const Tensor& h_prev,
                                      const Tensor& c_prev, const Tensor& weight_hh,
                                      const std::vector<int64_t>& batch_sizes, bool reverse, double scale,
                                      bool hard, bool onednn, bool weight_grad) {
  check_sequence(gates, weight_hh, batch_sizes);
  const int64_t hidden = weight_hh.size(1), batch = batch_sizes[0];
  const auto state = [&](const std::optional<Tensor>& grad) {
    return grad.has_value() && grad->defined() ? grad->clone(at::MemoryFormat::Contiguous)
                                               : at::zeros({batch, hidden}, gates.options());
  };
  Tensor dh = state(grad_h_n), dc = state(grad_c_n);
  const Tensor grad_output = rows_of(grad_output_in);
  Tensor grad_gates = at::empty_like(gates);
  const StepProduct recurrent_t(weight_hh.t(), batch, onednn);
  const auto offsets = row_offsets(batch_sizes);
  auto order = forward_order(static_cast<int64_t>(batch_sizes.size()), reverse);
  std::reverse(order.begin(), order.end());
  const int64_t grain = std::max<int64_t>(1, kGrainElements / hidden);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "g2lstm_sequence_backward", [&] {
    const scalar_t* grad_output_data = grad_output.defined() ? grad_output.data_ptr<scalar_t>() : nullptr;
    const int64_t grad_output_stride = grad_output.defined() ? grad_output.stride(0) : 0;
    for (const int64_t t : order) {
      const int64_t size = batch_sizes[t], start = offsets[t];
      const scalar_t* step_grad_output =
          grad_output_data ? grad_output_data + start * grad_output_stride : nullptr;
      const BackwardStep<scalar_t> step{dh.data_ptr<scalar_t>(),
                                        dc.data_ptr<scalar_t>(),
                                        step_grad_output,
                                        grad_output_stride,
                                        gates.data_ptr<scalar_t>() + start * 4 * hidden,
                                        tanh_cells.data_ptr<scalar_t>() + start * hidden,
                                        c_prev.data_ptr<scalar_t>() + start * hidden,
                                        grad_gates.data_ptr<scalar_t>() + start * 4 * hidden,
                                        hidden,
                                        static_cast<scalar_t>(scale),
                                        hard};
      at::parallel_for(0, size, grain, [&](int64_t begin, int64_t end) { backward_rows(step, begin, end); });
      dh.narrow(0, 0, size).copy_(recurrent_t(grad_gates.narrow(0, start, size), Tensor()));
    }
  });
  // (h^T dG)^T rather than dG^T h: the same product, markedly faster with MKL on skinny inputs.
  Tensor grad_weight = weight_grad ? at::mm(h_prev.t(), grad_gates).t() : Tensor();
  return {grad_gates, dh, dc, grad_weight};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward", &sequence_forward, "G2-LSTM sequence forward (one direction of one layer)");
  module.def("backward", &sequence_backward, "G2-LSTM sequence backward through time");
}
