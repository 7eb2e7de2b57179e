"""Benchmarks for amphora. Run ``python -m bench.amqp_layer``; see ``bench/README.md``."""
