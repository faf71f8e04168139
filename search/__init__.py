"""How to search: sweeps on Ray Tune with Optuna and ASHA, MLflow tracking, the `tune` CLI."""
