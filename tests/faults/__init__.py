"""The fault suite (issue 13): kills, bad files, malicious checkpoints, damaged catalogs,
locks, and fuzzing. ``pytest -m faults`` runs it alone; long loops are in benchmarks/faults.py."""
