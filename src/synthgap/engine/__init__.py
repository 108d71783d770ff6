"""The engine: the training loop (`train`), prediction (`predict`), evaluation of a checkpoint on a
dataset (`evaluate`), and the run's logs (TensorBoard in `tblog`, MLflow in `tracking`)."""
