"""The command line (`rutas`), set-up and demo scripts, and benchmarks."""
