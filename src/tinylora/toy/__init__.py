"""The CPU world: the arith task and the toy backbone."""
