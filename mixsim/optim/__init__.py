"""Optimizers, compressors and memory schemes as composable (init, update) pairs.

See ``docs/kernels.md`` for the API, the two AMSGrad forms, the bits accounting and the
measured speed.
"""

from mixsim.optim.bits import dense_bits, message_bits, sign_bits, sparse_bits
from mixsim.optim.compressors import (
    AdaptiveState,
    CompressorState,
    RandomCompressorState,
    adaptive,
    adaptive_probabilities,
    bernoulli,
    make_compressor,
    rand_k,
    scaled_sign,
    select_top_k,
    top_k,
    uncompressed,
    uniform,
)
from mixsim.optim.decay import WeightDecayState, weight_decay
from mixsim.optim.fused import fused_ef_top_k_amsgrad
from mixsim.optim.memory import (
    AccumulateState,
    CDAdam,
    CDAdamServerState,
    ErrorFeedbackState,
    MarkovState,
    OneBitAdam,
    OneBitAdamState,
    OneBitMessageState,
    OneBitModelState,
    accumulate,
    cd_adam,
    error_feedback,
    make_memory,
    markov,
    onebit_adam,
    onebit_adam_parties,
    two_way,
)
from mixsim.optim.optimizers import (
    AdamFamilyState,
    AdamState,
    AMSGradState,
    MomentumState,
    SGDState,
    adam,
    adam_family,
    amsgrad,
    amsgrad_torch,
    momentum,
    padam,
    rmsprop,
    sgd,
)
from mixsim.optim.registry import make_optimizer
from mixsim.optim.schedules import constant, cosine, inverse_sqrt, make_schedule, step_decay
from mixsim.optim.transform import Spec, Transformation, chain, identity

__all__ = [
    # composition
    "Transformation",
    "Spec",
    "chain",
    "identity",
    # optimizers
    "sgd",
    "momentum",
    "adam",
    "adam_family",
    "amsgrad",
    "amsgrad_torch",
    "rmsprop",
    "padam",
    "onebit_adam",
    "make_optimizer",
    "SGDState",
    "MomentumState",
    "AdamFamilyState",
    "AMSGradState",
    "AdamState",
    "OneBitAdamState",
    "weight_decay",
    "WeightDecayState",
    # schedules
    "constant",
    "inverse_sqrt",
    "step_decay",
    "cosine",
    "make_schedule",
    # compressors
    "uncompressed",
    "top_k",
    "rand_k",
    "scaled_sign",
    "bernoulli",
    "uniform",
    "adaptive",
    "select_top_k",
    "adaptive_probabilities",
    "make_compressor",
    "CompressorState",
    "RandomCompressorState",
    "AdaptiveState",
    # memory schemes
    "error_feedback",
    "markov",
    "accumulate",
    "cd_adam",
    "two_way",
    "onebit_adam_parties",
    "OneBitAdam",
    "OneBitMessageState",
    "OneBitModelState",
    "make_memory",
    "fused_ef_top_k_amsgrad",
    "CDAdam",
    "ErrorFeedbackState",
    "MarkovState",
    "AccumulateState",
    "CDAdamServerState",
    # bits
    "dense_bits",
    "sparse_bits",
    "sign_bits",
    "message_bits",
]
