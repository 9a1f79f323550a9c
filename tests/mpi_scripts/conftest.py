"""These scripts run under mpiexec (tests/test_distributed_mpi.py starts them); pytest must
not import them (doctest collection would run them without their arguments)."""

collect_ignore_glob = ["*.py"]
