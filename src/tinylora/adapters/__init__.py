"""The update itself: configs, the layers that add ΔW, the frozen SVD and its cache, tying, the base
fingerprint, attach / merge, per-row adapters, the adapter file and its exports."""
