"""Speed benchmarks (`make bench`): see README.md in this folder."""
