"""cmrfl: federated learning for cardiac MRI tissue characterisation."""

__version__ = "0.1.0"
