"""A Ray Tune function trainable that is not PyTorch: a linear classifier trained epoch by epoch
(`partial_fit`) on scikit-learn's bundled digits, written as Ray Tune's documentation writes one:
`tune.report` every epoch with a checkpoint, `tune.get_checkpoint()` on start.

The checkpoint holds the model as an MLflow model (`mlflow_model/`, scikit-learn's skops format,
no pickle): the trial resumes from it, and the sweep registers the best one.
"""

import os
import tempfile

import mlflow.sklearn
import numpy as np
import sklearn
from ray import tune
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import f1_score, log_loss
from sklearn.model_selection import train_test_split

REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}"]  # named: MLflow need not infer them every epoch


def train_digits(config):
    x, y = load_digits(return_X_y=True)  # bundled with scikit-learn: no download
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.3, stratify=y, random_state=0)
    classes = np.unique(y)
    model = SGDClassifier(loss="log_loss", alpha=config["alpha"], learning_rate="constant",
                          eta0=config["eta0"], random_state=config.get("seed", 0))
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            model = mlflow.sklearn.load_model(os.path.join(directory, "mlflow_model"))
            with open(os.path.join(directory, "epoch")) as f:
                start = int(f.read())
    for epoch in range(start, config["epochs"]):
        model.partial_fit(x_train, y_train, classes=classes)
        predicted = model.predict(x_val)
        metrics = {
            "val_f1": f1_score(y_val, predicted, average="macro"),
            "val_acc": float(np.mean(predicted == y_val)),
            "val_loss": log_loss(y_val, model.predict_proba(x_val), labels=classes),
        }
        with tempfile.TemporaryDirectory() as directory:
            mlflow.sklearn.save_model(model, os.path.join(directory, "mlflow_model"),
                                      pip_requirements=REQUIREMENTS)
            with open(os.path.join(directory, "epoch"), "w") as f:
                f.write(str(epoch + 1))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
