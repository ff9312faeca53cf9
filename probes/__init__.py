"""Inputs the recognizer is tried with, shared by the tests and the benchmarks: MNIST digits drawn
back as users' files (render) and a hostile burst against the HTTP service (hostile)."""
