"""The promptkit_async benchmark suite: ``python -m benchmarks [--quick]``.

Every comparison is measured in one run, variants interleaved round by round
(A B C, B C A, C A B, ...) after a warm-up, so machine drift hits all of them
equally; ratios are computed within the run. See ``benchmarks/README.md``.
"""
