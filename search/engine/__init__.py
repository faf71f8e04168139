"""The sweep engine: SweepConfig -> Tuner (Optuna bridge, ASHA), Ray connection, storage, trials read back."""
