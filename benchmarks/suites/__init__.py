"""One module per benchmark suite; benchmarks/bench_train.py runs them."""
