"""The commands behind the `tune` CLI: run, train, schedule, sync-mlflow; each takes typed options."""
