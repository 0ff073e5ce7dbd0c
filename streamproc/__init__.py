"""streamproc: real-time user-behaviour scoring on Kafka, Faust and a transformer scorer."""

__version__ = "0.1.0"
