"""Exceptions raised by the cfe library.

The CLI catches :class:`CfeError` (and only it), prints its message as one line on
stderr and exits non-zero. Library code never prints.
"""

from __future__ import annotations


class CfeError(Exception):
    """Base class of every error cfe reports to a user."""


class InputError(CfeError):
    """A bad image, reference, class name or option value."""


class DataError(CfeError):
    """A dataset is missing, incomplete or malformed."""


class WeightsError(CfeError):
    """A model folder or weights file is missing, corrupt or of another architecture."""


class DeviceError(CfeError):
    """A device was requested that this machine does not have."""


class NotImplementedYet(CfeError):
    """A command whose issue has not landed yet."""
