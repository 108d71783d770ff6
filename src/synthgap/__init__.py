"""synthgap: how good is a synthetic dataset for training a detector that must work on real images?

Layout, by role (each folder may import only the ones listed before it, plus `errors`):
``errors`` · ``io/`` (storage, http, archives, downloads, locks) · ``data/`` (one `Sample` type, readers,
writers, splits) · ``metrics/`` · ``generate/`` · ``config/`` · ``models/`` · ``engine/`` (train, evaluate,
predict, logging) · ``stats/`` · ``study/`` · ``report/`` · ``pipelines/`` · ``cli/``.

The module paths of release 0.1 that moved into these folders (`MOVED`) keep working for one release:
``import synthgap.storage`` gives the new module itself (not a copy) with a ``DeprecationWarning``.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "synthgap.storage": "synthgap.io.storage",
    "synthgap.httpfetch": "synthgap.io.httpfetch",
    "synthgap.archive": "synthgap.io.archive",
    "synthgap.download": "synthgap.io.download",
    "synthgap.locks": "synthgap.io.locks",
    "synthgap.train": "synthgap.engine.train",
    "synthgap.evaluate": "synthgap.engine.evaluate",
    "synthgap.predict": "synthgap.engine.predict",
    "synthgap.tblog": "synthgap.engine.tblog",
    "synthgap.tracking": "synthgap.engine.tracking",
    "synthgap.checkpoint": "synthgap.models.checkpoint",
    "synthgap.datasetinsights": "synthgap.config.datasetinsights",
    "synthgap.demo": "synthgap.study.demo",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):  # the new module is already executed
        pass


if not any(type(f).__name__ == "_Alias" for f in sys.meta_path):
    sys.meta_path.append(_Alias())
