"""TOFU (Maini et al. 2024) as the unlearning challenge's yardstick: target and retain models, TOFU's metrics
(forget quality, model utility), and efficiency as a share of retraining. See :mod:`llm_unlearn.tofu.bench`."""

from .data import QAItem, TofuData, TofuDataError, build_tofu_data, load_split, read_records
from .methods import MethodUnavailableError, unlearn_with_method

__all__ = ["QAItem", "TofuData", "TofuDataError", "build_tofu_data", "load_split", "read_records",
           "MethodUnavailableError", "unlearn_with_method"]
