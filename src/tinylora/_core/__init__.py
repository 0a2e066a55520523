"""The base layer: seeding, processes and devices, threads, the cache folder; imports nothing of ours."""
