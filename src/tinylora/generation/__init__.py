"""Generation: seeded sampling (:mod:`.sampling`), our decode loop (:mod:`.engine`), one call over it
and Hugging Face ``generate`` (:mod:`.generate`), and the rollout backend trainers draw from (:mod:`.rollout`)."""
