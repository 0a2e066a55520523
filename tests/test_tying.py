import pytest

import tinylora
from tinylora.adapters.tying import assign_groups, n_tie_for_budget, num_groups
from conftest import make_model

TYPES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def names(layers):
    return [f"model.layers.{i}.{'self_attn' if t[0] in 'qkvo' else 'mlp'}.{t}" for i in range(layers) for t in TYPES]


def test_group_tables_three_layers():
    n = names(3)  # 21 modules
    assert assign_groups(n, "none") == list(range(21))
    assert assign_groups(n, "all") == [0] * 21
    assert assign_groups(n, "tiled", 5) == [i // 5 for i in range(21)]
    assert num_groups(n, "tiled", 5) == 5
    # structured: q of layers 0,1 | q of layer 2 | k of 0,1 | k of 2 | …
    s = assign_groups(n, "structured", 2)
    expected = []
    for layer in range(3):
        for t in range(7):
            expected.append(2 * t + (layer // 2))
    assert s == expected
    assert num_groups(n, "structured", 2) == 14
    assert num_groups(n, "structured", 3) == 7  # one group per type


def test_qwen7b_counts_from_names():
    n = names(28)  # Qwen2.5-7B: 28 layers × 7 projections
    assert num_groups(n, "tiled", 16) == 13  # paper: u=1, n_tie=16 → 13 parameters
    assert n_tie_for_budget(n, "tiled", u=1, budget=13) == 16
    assert n_tie_for_budget(n, "structured", u=1, budget=28) == 7  # 7 types × 4 blocks of 7 layers
    with pytest.raises(ValueError, match="cannot be met"):
        n_tie_for_budget(n, "structured", u=2, budget=13)


def test_qwen7b_layer_count_attached_counts_and_bytes():
    # Same depth and module list as Qwen2.5-7B, tiny widths: counts depend only on these.
    m = make_model("qwen2", num_hidden_layers=28, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                   num_key_value_heads=1)
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=13, tying="all"))
    assert tinylora.num_trainable(m) == 13
    assert tinylora.update_bytes(m, "bf16") == 26 and tinylora.update_bytes(m, "fp32") == 52
    tinylora.detach(m)
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=1, tying="tiled", n_tie=16))
    assert tinylora.num_trainable(m) == 13
    tinylora.detach(m)
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=2, tying="tiled", budget=30))
    assert tinylora.num_trainable(m) == 28 and m.tinylora.n_tie == 14
    tinylora.detach(m)
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=3, tying="none"))
    assert tinylora.num_trainable(m) == 28 * 7 * 3


def test_modules_in_a_group_share_one_vector():
    m = make_model("qwen2")
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=4, tying="structured", n_tie=3))
    mods = tinylora.adapted_modules(m)
    qs = [mod.delta.v for name, mod in mods.items() if name.endswith("q_proj")]
    ks = [mod.delta.v for name, mod in mods.items() if name.endswith("k_proj")]
    assert all(v is qs[0] for v in qs) and all(v is ks[0] for v in ks) and qs[0] is not ks[0]
    assert len(list(m.parameters())) > 0 and tinylora.num_trainable(m) == 7 * 4
