"""What a few bytes change: an adapter against its base, off-task, on-task and on behaviour probes.

``audit`` is the full report (``tinylora audit``); ``drift`` alone is the cheap check a server runs
on every upload (``tinylora serve --max-kl``, :mod:`.policy`)."""

from .drift import Reference, base_of, build_reference, drift, load_prompts
from .facts import adapter_facts
from .policy import DriftPolicy
from .probes import is_refusal
from .report import audit, format_report, probe_refusals, task_effect

__all__ = ["DriftPolicy", "Reference", "adapter_facts", "audit", "base_of", "build_reference", "drift",
           "format_report", "is_refusal", "load_prompts", "probe_refusals", "task_effect"]
