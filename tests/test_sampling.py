"""The sampler's fast paths give exactly the tokens of the plain formulas."""

import pytest
import torch

from tinylora._core.seeding import counter_uniform, key_halves
from tinylora.generation.sampling import Sampling, greedy_tokens, sample_tokens


@pytest.mark.parametrize("V", [151_936, 49_152, 1_001, 300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_tokens_is_argmax(V, dtype):
    g = torch.Generator().manual_seed(V)
    x = torch.randn(16, V, generator=g).to(dtype)
    x[0, :] = 0.0  # all tied: the first index
    x[1, 7], x[1, V - 1] = 50, 50  # tied maxima far apart
    x[2, V - 1] = 50  # the maximum in the short last chunk
    x[3, 5], x[3, V // 2] = float("nan"), float("nan")  # NaN counts as maximal, first one wins
    x[4, :] = float("-inf")
    x[5, 300:] = x[5, 300:].round()  # bf16 and fp32 ties inside a chunk
    assert torch.equal(greedy_tokens(x), x.argmax(-1))
    if dtype == torch.bfloat16:  # the engine picks on the model's dtype: the same index as on fp32
        assert torch.equal(greedy_tokens(x), x.float().argmax(-1))


def reference_sample(scores, hi, lo, t, s):
    """The sampler as first written (division always, out-of-place exp and cumsum), no top-p."""
    logp = torch.log_softmax(scores.float() / max(s.temperature, 1e-6), dim=-1)
    cdf = logp.double().exp().cumsum(dim=-1)
    u = counter_uniform(hi, lo, t)
    toks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_max(cdf.shape[-1] - 1)
    return toks.squeeze(-1), logp.gather(-1, toks).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_tokens_equal_the_plain_formula(temperature):
    g = torch.Generator().manual_seed(0)
    scores = (3 * torch.randn(32, 5_000, generator=g)).bfloat16()
    hi, lo = key_halves(list(range(32)))
    s = Sampling(temperature, 1.0, 8)
    for t in range(8):
        tok, lp = sample_tokens(scores, hi, lo, t, s)
        ref_tok, ref_lp = reference_sample(scores, hi, lo, t, s)
        assert torch.equal(tok, ref_tok) and torch.equal(lp, ref_lp)
