"""One typed config for a training run; round-trips to YAML and takes ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._core.distributed import check_device_name
from .._core.dtypes import BASE_DTYPES, DTYPE_NAMES
from ..adapters import methods
from ..adapters.config import AdapterConfig, TinyLoRAConfig, config_from_dict
from ..generation import ENGINES
from .losses import AGGREGATIONS

ALGOS = ("grpo", "sft", "es")  # the algorithm names; each is the module trainers/<name>.py



def _from_known_keys(cls, data: dict[str, Any], what: str):
    """``cls(**data)``, refusing keys the dataclass does not have (one line naming them and the known ones)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class ESConfig:
    """Evolution strategies (``algo: es``): search the adapter's few numbers directly on the reward."""

    method: str = "openai"  # openai (antithetic pairs, centred ranks, Adam/SGD) or cma (CMA-ES via pycma)
    population: int | None = None  # members per step; openai: even, default 32 (16 pairs); cma: 4 + ⌊3 ln n⌋
    sigma: float = 0.05  # perturbation std (openai) or initial step size (cma), in adapter-value units
    optimizer: str = "adam"  # openai: adam or sgd, at the run's lr
    samples: int = 0  # 0: greedy fitness (the held-out metric itself); G > 0: G sampled completions per prompt
    eval_every: int = 10  # evaluate the current mean on eval_split every k steps (0: only at start and end)
    eval_split: str = "validation"
    eval_limit: int = 100
    keep_best: bool = True  # finish with the mean that scored best on eval_split (the start included)
    rows_per_forward: int = 512  # members × prompts generated in one batched forward

    def __post_init__(self) -> None:
        checks = [
            (self.method in ("openai", "cma"), f"es.method must be openai or cma, got {self.method!r}"),
            (self.population is None or self.population >= 2, f"es.population must be >= 2, got {self.population}"),
            (self.method != "openai" or self.population is None or self.population % 2 == 0,
             f"es.population must be even for openai (antithetic pairs), got {self.population}"),
            (self.sigma > 0, f"es.sigma must be > 0, got {self.sigma}"),
            (self.optimizer in ("adam", "sgd"), f"es.optimizer must be adam or sgd, got {self.optimizer!r}"),
            (self.samples >= 0, f"es.samples must be >= 0, got {self.samples}"),
            (self.eval_every >= 0, f"es.eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_limit >= 1, f"es.eval_limit must be >= 1, got {self.eval_limit}"),
            (self.rows_per_forward >= 1, f"es.rows_per_forward must be >= 1, got {self.rows_per_forward}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def members(self, n: int) -> int:
        """Members per step for ``n`` trained numbers."""
        if self.population is not None:
            return self.population
        return 32 if self.method == "openai" else 4 + int(3 * math.log(n))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ESConfig:
        return _from_known_keys(cls, data, "es key")


@dataclass
class TrainConfig:
    # what
    model: str = "toy"
    task: str = "arith"
    task_args: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, Any] = field(default_factory=lambda: TinyLoRAConfig(u=13, tying="all").to_dict())
    algo: str = "grpo"  # or "sft", "es"
    sft_source: str = "reference"  # sft: the task's reference solutions, or "rejection": own correct samples
    # GRPO
    steps: int = 300
    prompts_per_step: int = 16  # B
    group_size: int = 4  # G
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    clip_low: float = 0.2
    clip_high: float = 0.4
    loss_aggregation: str = "token-mean"
    scale_std: bool = True
    kl_coef: float = 0.0
    num_iterations: int = 1
    micro_batch_size: int = 64  # sequences per forward/backward (gradient accumulation)
    shared_prompt: bool = False  # GRPO: a group's G samples share one forward of their prompt (same loss,
    # fewer FLOPs on long prompts; the toy keeps the batched forward, faster for its tiny model)
    # generation: tinylora (our decode loop), static (the same with static shapes; a CUDA graph on a
    # GPU, unverified), hf (transformers generate), vllm (the base in vLLM, the adapter synced as a LoRA
    # every step; optional), auto (tinylora for known architectures, else hf)
    rollout_engine: str = "auto"
    # GRPO: truncated importance sampling, min(π_train / π_rollout, tis_cap) per token (the paper's stack: 2.0
    # with vLLM rollouts); null = off. The gap is logged either way (rollout_lp_gap)
    tis_cap: float | None = None
    # ES (algo: es); prompts_per_step, max_new_tokens, temperature and top_p apply too
    es: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(ESConfig()))
    # optimisation
    lr: float | None = None  # None: the adapter method's default_lr (adapters.methods)
    warmup_steps: int = 5
    schedule: str = "constant"  # or "cosine"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # evaluation and bookkeeping
    eval_split: str = "test"
    eval_limit: int | None = 200
    eval_batch_size: int = 64
    eval_max_new_tokens: int = 96
    eval_before: bool = True
    checkpoint_every: int = 10
    save_dtype: str = "fp32"
    log_completions: bool = True  # every sampled completion and its reward to completions.jsonl
    # where the step metrics go besides metrics.jsonl (always written): tensorboard, wandb (optional extras)
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    seed: int = 0
    dtype: str = "fp32"  # the frozen base's dtype, or auto (bf16 where the machine has fast bf16, else fp32);
    # the adapter, its path through each layer and the optimizer are fp32 regardless
    device: str = "auto"  # cpu, cuda (one GPU per rank under torchrun), cuda:N, or auto (CUDA when present)
    autocast: str = "auto"  # bf16 autocast: auto (on CUDA only), bf16 (always), off
    dist_timeout_s: float = 600.0  # torchrun: a collective waiting longer than this fails the job
    out_dir: str = "runs/toy-grpo"

    def __post_init__(self) -> None:
        self._coerce_scalars()
        self.adapter_config()  # validates the adapter section
        self.es = dataclasses.asdict(self.es_config())  # defaults filled in: the saved config is complete
        checks = [
            (self.algo in ALGOS, f"algo must be one of {', '.join(ALGOS)}, got {self.algo!r}"),
            (self.algo != "es" or methods.get(self.adapter["method"]).per_row,
             f"algo es searches {' or '.join(m.name for m in methods.METHODS.values() if m.per_row)} values "
             f"(batched per row); got adapter method {self.adapter.get('method')!r}"),
            (self.sft_source in ("reference", "rejection"),
             f"sft_source must be 'reference' or 'rejection', got {self.sft_source!r}"),
            (self.steps >= 1 and self.prompts_per_step >= 1 and self.group_size >= 1, "steps, prompts_per_step "
             "and group_size must be positive"),
            (self.temperature > 0, "temperature must be > 0 for sampling"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.loss_aggregation in AGGREGATIONS,
             f"loss_aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.loss_aggregation!r}"),
            (self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine, got {self.schedule!r}"),
            (self.num_iterations >= 1, "num_iterations must be >= 1"),
            (self.micro_batch_size >= 1, "micro_batch_size must be >= 1"),
            (self.rollout_engine in ENGINES,
             f"rollout_engine must be one of {', '.join(ENGINES)}, got {self.rollout_engine!r}"),
            (self.save_dtype in DTYPE_NAMES, f"save_dtype must be one of {', '.join(DTYPE_NAMES)}"),
            (self.dtype in BASE_DTYPES, f"dtype must be one of {', '.join(BASE_DTYPES)}, got {self.dtype!r}"),
            (self.clip_low >= 0 and self.clip_high >= 0, "clip ranges must be non-negative"),
            (self.autocast in ("auto", "bf16", "off"), f"autocast must be auto, bf16 or off, got {self.autocast!r}"),
            (self.tis_cap is None or (isinstance(self.tis_cap, (int, float)) and self.tis_cap >= 1),
             f"tis_cap must be >= 1 or null, got {self.tis_cap!r}"),
            (self.dist_timeout_s > 0, "dist_timeout_s must be positive"),
            (self.lr is None or self.lr > 0, f"lr must be > 0 (or null for the method's default), got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}"),
            (self.max_new_tokens >= 1 and self.eval_max_new_tokens >= 1, "max_new_tokens and eval_max_new_tokens "
             "must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.eval_limit is None or self.eval_limit >= 1, f"eval_limit must be >= 1 or null, got {self.eval_limit}"),
            (self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        check_device_name(self.device)
        if self.rollout_engine == "vllm":
            from ..generation import vllm_engine

            vllm_engine.require()
        if not isinstance(self.report_to, list) or not all(isinstance(x, str) for x in self.report_to):
            raise ValueError(f"report_to must be a list of logger names (jsonl, tensorboard, wandb), got {self.report_to!r}")
        from .reporting import REPORTERS

        bad = [x for x in self.report_to if x not in REPORTERS]
        if bad:
            raise ValueError(f"report_to: unknown logger(s) {bad}; known: {', '.join(REPORTERS)}")

    def adapter_config(self) -> AdapterConfig:
        return config_from_dict(self.adapter)

    def es_config(self) -> ESConfig:
        """The ES section with defaults filled in (a partial ``es:`` mapping is fine)."""
        if not isinstance(self.es, dict):
            raise ValueError(f"es must be a mapping of ES settings, got {self.es!r}")
        return ESConfig.from_dict(self.es)

    def _coerce_scalars(self) -> None:
        """Numbers written ``1e-2`` arrive as strings (YAML 1.1 wants ``1.0e-2``): convert or refuse."""
        kinds = {"int": int, "float": float, "bool": bool, "str": str}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            names = [t.strip() for t in str(f.type).split("|")]
            if value is None and "None" in names:
                continue
            want = [kinds[n] for n in names if n in kinds]
            if not want or any(type(value) is t for t in want):
                continue
            if float in want and isinstance(value, (int, str)) and not isinstance(value, bool):
                try:
                    setattr(self, f.name, float(value))
                    continue
                except ValueError:
                    pass
            raise ValueError(f"{f.name} must be {' or '.join(n for n in names if n in kinds or n == 'None')}, "
                             f"got {value!r}")

    def learning_rate(self) -> float:
        # the method's default: a 13-number vector needs a far larger step than LoRA's matrices
        return self.lr if self.lr is not None else methods.get(self.adapter["method"]).default_lr

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_known_keys(cls, data, "config key")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> TrainConfig:
        from ..adapters.config import read_yaml

        data = read_yaml(path)
        return cls.from_dict(apply_overrides(data, overrides))


def _method_fields(method: Any) -> set[str]:
    from ..adapters.config import CONFIG_CLASSES

    cls = CONFIG_CLASSES.get(method)
    return {"method"} | ({f.name for f in dataclasses.fields(cls)} if cls else set())


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values parsed as YAML; dotted keys reach into nested sections)."""
    import yaml

    data = dict(data)
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override must be key=value, got {item!r}")
        pairs.append((key, yaml.safe_load(raw)))
    # a method switch first: the other adapter.* keys of the same command line then apply to the new method
    pairs.sort(key=lambda kv: kv[0] != "adapter.method")
    for key, value in pairs:
        if key == "adapter.method" and isinstance(data.get("adapter"), dict) and value != data["adapter"].get("method"):
            # the old method's own settings do not carry over (tinylora's u to lora); the shared ones
            # (r, target_modules, …) do. A key the new method lacks, set on this command line, stays an error.
            data["adapter"] = {k: v for k, v in data["adapter"].items() if k in _method_fields(value)}
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = value
    return data
