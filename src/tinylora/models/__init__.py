"""Base models: names and paths to weights (:mod:`.loading`), the offline catalogue of real models
(:mod:`.catalog`), the GGUF cache (:mod:`.gguf`) and seeded synthetic models for tests (:mod:`.synthetic`)."""
