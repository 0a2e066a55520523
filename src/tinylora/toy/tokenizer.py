"""A character-level ``PreTrainedTokenizerFast``: every character one token, no unknowns in-domain.

Character level keeps the toy backbone's vocabulary tiny (≈ 80 symbols), makes arithmetic digits
separate tokens (as in real tokenizers for Qwen/Llama-3), and needs no tokenizer training.
"""

from __future__ import annotations

import string

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
DEFAULT_ALPHABET = string.ascii_letters + string.digits + " \n.,:;?!'\"-+*/=()#$%<>_"


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))  # keep order, drop duplicates
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS) + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)
    return fast
