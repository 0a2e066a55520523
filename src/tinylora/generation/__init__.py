"""Generation: seeded sampling (:mod:`.sampling`), our decode loop (:mod:`.engine`), one call over it
and Hugging Face ``generate`` (:mod:`.generate`), and the rollout backend trainers draw from (:mod:`.rollout`)."""

# the decode loops a caller may ask for (config rollout_engine, eval --engine): ours, ours with static
# shapes, Hugging Face generate, vLLM (optional, :mod:`.vllm_engine`), or auto (ours where it knows the architecture)
ENGINES = ("auto", "tinylora", "static", "hf", "vllm")
