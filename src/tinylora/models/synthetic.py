"""Random-weight Hugging Face models with realistic weight spectra, for tests, demos and benchmarks.

No pretrained weights exist on our machines, and random-init weights have flat spectra
(σ₁ ≈ σ₂ ≈ σ₃ …) where the top-r singular vectors are ill-defined — unlike real LLM weights, whose
top singular values stand clear of the bulk. ``with_spectrum`` adds a few decaying rank-one spikes
to every 2-D weight so the SVD-based adapters behave as they would on a real model.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("qwen2", "llama", "gpt2")
SPIKES = (3.0, 2.2, 1.6, 1.2)  # in units of the bulk's spectral norm: top-2 gaps ≈ 0.25, 0.2


def tiny_config(arch: str = "qwen2", **overrides):
    """A small config of a real architecture (a few hundred thousand parameters)."""
    import transformers as tf

    if arch == "qwen2":
        cfg = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=True)
        cls = tf.Qwen2Config
    elif arch == "llama":
        cfg = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                   tie_word_embeddings=False)
        cls = tf.LlamaConfig
    elif arch == "gpt2":
        cfg = dict(vocab_size=128, n_embd=64, n_layer=3, n_head=4, n_positions=128)
        cls = tf.GPT2Config
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    cfg.update(overrides)
    return cls(**cfg)


def qwen25_05b_config():
    """Qwen2.5-0.5B's exact shapes (494M parameters)."""
    import transformers as tf

    return tf.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                          tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6)


def smollm2_135m_config(**overrides):
    """SmolLM2-135M(-Instruct)'s exact shapes (30 layers, 576 wide, vocabulary 49,152)."""
    import transformers as tf

    cfg = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)
    cfg.update(overrides)
    return tf.LlamaConfig(**cfg)


def save_smollm2_shape(path, seed: int = 0) -> None:
    """Random weights of SmolLM2-135M's shape saved with the toy tokenizer (its ids fit the vocabulary):
    a real-size model a benchmark can load, serve or train by path, offline."""
    from transformers import AutoModelForCausalLM

    from .loading import load_tokenizer

    tok = load_tokenizer("toy")
    torch.manual_seed(seed)
    cfg = smollm2_135m_config(tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                              bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)


@torch.no_grad()
def with_spectrum(model: nn.Module, seed: int = 0, spikes: tuple[float, ...] = SPIKES) -> nn.Module:
    """Add decaying rank-one spikes to every Linear/Conv1D weight (in place)."""
    from transformers.pytorch_utils import Conv1D

    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if not isinstance(module, (nn.Linear, Conv1D)) or module.weight.shape[0] > 50_000:
            continue  # skip LM heads tied to huge vocabularies
        W = module.weight
        m, n = W.shape
        bulk = W.float().std() * (m**0.5 + n**0.5)  # ≈ spectral norm of an i.i.d. matrix
        a = torch.randn(m, len(spikes), generator=gen)
        b = torch.randn(n, len(spikes), generator=gen)
        a, _ = torch.linalg.qr(a)
        b, _ = torch.linalg.qr(b)
        s = torch.tensor(spikes) * bulk
        W.add_(((a * s) @ b.T).to(W.dtype))
    return model


def tiny_model(arch: str = "qwen2", seed: int = 0, spectrum: bool = True, dtype=torch.float32, **overrides):
    """A seeded random model of a real architecture; ``spectrum`` gives its weights real-like spectra."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tiny_config(arch, **overrides)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    if spectrum:
        with_spectrum(model, seed)
    return model.to(dtype).eval()
