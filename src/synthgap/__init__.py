"""synthgap: how good is a synthetic dataset for training a detector that must work on real images?"""

__version__ = "0.1.0"
