"""cfe: counterfactual explanations for image classifiers.

The command line (``cfe``) is a thin layer over :mod:`cfe_cli.api`; notebooks call the
API directly with tensors.
"""

__version__ = "0.1.0"

from cfe_cli.errors import CfeError, DataError, DeviceError, InputError, WeightsError

__all__ = ["CfeError", "DataError", "DeviceError", "InputError", "WeightsError", "__version__"]
