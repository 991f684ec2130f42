"""g2lstm: LSTMs whose input and forget gates train towards binary values (G2-LSTM, ICML 2018)."""

from g2lstm import functional
from g2lstm.gates import EVAL_GATES, GATE_MODES
from g2lstm.lstm import G2LSTM, G2LSTMCell
from g2lstm.quantization import QuantizedG2LSTM  # registers it with torch.ao.quantization.quantize_dynamic
from g2lstm.recording import GateRecording, record_gates

__version__ = "0.1.0"

__all__ = [
    "EVAL_GATES",
    "GATE_MODES",
    "G2LSTM",
    "G2LSTMCell",
    "GateRecording",
    "QuantizedG2LSTM",
    "functional",
    "record_gates",
    "__version__",
]
