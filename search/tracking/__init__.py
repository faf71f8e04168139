"""Everything MLflow: recorder, background writer, Tune callback, replay, registry, champion, plots."""
