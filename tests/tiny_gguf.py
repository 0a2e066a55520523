"""A tiny Llama model written as a GGUF file (Q8_0 projections, a byte-level BPE tokenizer, a chat
template): the GGUF path of the loaders is tested without downloading a real model."""

import gguf
import numpy as np

def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]

def write_tiny_llama_gguf(path, seed=0, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128):
    rng = np.random.default_rng(seed)
    tokens = _bytes_to_unicode() + ["he", "ll", "Ġt"] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["h e", "l l", "Ġ t"]
    types = [1] * (len(tokens) - 3) + [3, 3, 3]
    vocab = len(tokens)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers); w.add_context_length(256); w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn); w.add_head_count(heads); w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0); w.add_layer_norm_rms_eps(1e-5); w.add_vocab_size(vocab)
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens); w.add_token_types(types); w.add_token_merges(merges)
    w.add_bos_token_id(vocab - 3); w.add_eos_token_id(vocab - 1); w.add_pad_token_id(vocab - 3)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    def q8(a):  # a Q8_0 tensor: the loader must dequantise it
        return gguf.quants.quantize(a.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    def add(name, shape, quant=True):
        a = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if quant and shape[-1] % 32 == 0:
            w.add_tensor(name, q8(a), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)
    add("token_embd.weight", (vocab, hidden))
    kv = hidden // heads * kv_heads
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), quant=False)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), quant=False)
        add(f"blk.{i}.attn_q.weight", (hidden, hidden)); add(f"blk.{i}.attn_k.weight", (kv, hidden))
        add(f"blk.{i}.attn_v.weight", (kv, hidden)); add(f"blk.{i}.attn_output.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_gate.weight", (ffn, hidden)); add(f"blk.{i}.ffn_up.weight", (ffn, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, ffn))
    add("output_norm.weight", (hidden,), quant=False)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
