"""Benchmarking: the timing harness at the core; the suite (plan over models, backends and batches), the zoo
study, the trust checks, per-op profiles and plots around it."""

from .harness import BenchResult, Budget, bench
from .suite import BenchReport, bench_models

__all__ = ["BenchReport", "BenchResult", "Budget", "bench", "bench_models"]
