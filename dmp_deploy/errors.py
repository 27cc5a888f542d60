"""Errors a user can act on. Anything raised as a `UserError` is printed as one message, without a traceback."""


class UserError(Exception):
    """An error with a message meant for the operator: what was wrong, where, and what to do."""


class ConfigError(UserError):
    """The environment's configuration is missing or invalid."""


class RenderError(UserError):
    """A template failed to render, or rendered into something invalid."""


class PlanError(UserError):
    """The plan cannot be carried out as it stands (refused destroy, missing prerequisite, ...)."""


class ApplyError(UserError):
    """A change failed while being carried out."""


class CorruptState(UserError):
    """An object in the state bucket (the lock, the release index, a release record) is not what it should be:
    the message names the object and what to do about it."""


class MutationRefused(Exception):
    """A mutating AWS call was attempted through a read-only seam (a bug: plan and drift never mutate)."""
