"""What went wrong, for the operator: every failure a command can end with, as a kind and a one-line message
that says what to do. The CLI prints the message (and, with --json, `{"status": "error", "error": {"kind",
"message"}}`); only a bug in this tool is an "internal" error.

Credentials, profiles, SSO sessions, endpoints and throttling are the operator's everyday failures, not bugs:
each gets the command that fixes it (`aws sso login --profile X`) or the fact that explains it ("cannot reach STS
at ..."), never a botocore class name.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import botocore.exceptions

from dmp_deploy.errors import ApplyError, ConfigError, CorruptState, PlanError, RenderError, UserError

# The error codes botocore's standard retry mode treats as throttling: seeing one here means its retries ran out.
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete", "EC2ThrottledException",
})
# Codes AWS answers with when the credentials themselves are expired or not valid.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
INVALID_CODES = frozenset({"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                           "AuthFailure", "InvalidAccessKeyId"})
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class UsageError(UserError):
    """The command line itself is wrong (unknown option, missing argument)."""


def profile() -> str:
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"


def describe(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for a failure. kind is one word a script can branch on."""
    if isinstance(exc, UserError):
        return _user_kind(exc), str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted: run the same command again; apply continues from the live state"
    if isinstance(exc, BrokenPipeError):
        return "broken-pipe", "the reader of the output went away"
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return "profile", (f"the AWS profile {exc.kwargs.get('profile', profile())!r} is not in your AWS config "
                           f"(~/.aws/config): fix AWS_PROFILE, or add the profile with `aws configure sso`")
    if isinstance(exc, (botocore.exceptions.SSOError, botocore.exceptions.TokenRetrievalError)):
        return "sso", (f"the AWS SSO session for profile {profile()!r} has expired or is not valid: run "
                       f"`aws sso login --profile {profile()}` and run the command again")
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
                        botocore.exceptions.CredentialRetrievalError)):
        return "credentials", ("no usable AWS credentials found: set AWS_PROFILE (then `aws sso login --profile "
                               "NAME`) or the usual AWS_* variables, or use --env local")
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return "config", "no AWS region: every environment's config names one in [environment] region"
    if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return "connection", _unreachable(exc)
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error(exc)
    return "internal", f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def _user_kind(exc: UserError) -> str:
    if getattr(type(exc), "kind", None):
        return type(exc).kind
    for cls, kind in ((UsageError, "usage"), (CorruptState, "state"), (ConfigError, "config"),
                      (RenderError, "render"), (PlanError, "plan"), (ApplyError, "apply")):
        if isinstance(exc, cls):
            return kind
    return "user"


def _unreachable(exc: BaseException) -> str:
    url = getattr(exc, "kwargs", {}).get("endpoint_url") or ""
    host = urlparse(url).hostname or ""
    if host in LOCAL_HOSTS:
        return (f"nothing answers at {url}: if this is the embedded AWS, it has stopped; start it with `python "
                f"run.py local up` (it starts empty: apply again after)")
    service = host.split(".")[0].upper() if host else "AWS"
    what = "timed out reaching" if "timeout" in type(exc).__name__.lower() else "cannot reach"
    return (f"{what} {service} at {url or 'its endpoint'}: check the network, any proxy (HTTPS_PROXY) and "
            f"the region in the environment's config, then run the command again")


def _client_error(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    err = exc.response.get("Error", {})
    code, message = err.get("Code") or "", err.get("Message") or ""
    if code in THROTTLING_CODES:
        return "throttled", (f"AWS throttled {exc.operation_name} ({code}) and kept doing so through every retry: "
                             f"another tool may be busy in this account; wait a minute and run the command again "
                             f"(apply continues from the live state)")
    if code in EXPIRED_CODES:
        return "credentials", (f"the AWS credentials have expired ({code}): renew them (`aws sso login --profile "
                               f"{profile()}`) and run the command again")
    if code in INVALID_CODES:
        return "credentials", (f"AWS does not accept these credentials ({code}: {message}): check AWS_PROFILE "
                               f"or the AWS_* variables (`aws sso login --profile {profile()}` for SSO)")
    return "aws", f"AWS refused {exc.operation_name}: {code}: {message}"
