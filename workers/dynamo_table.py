"""One DynamoDB table through one boto3 client, for :mod:`workers.dynamo`: requests, retries, errors.

With :mod:`workers.dynamo` the only modules that import boto3/botocore. :class:`DynamoTable` sends each
request, counts it, retries transient failures (throttling, 5xx, transaction conflicts, connection
trouble) with tenacity's exponential backoff and jitter for a *time* budget (``retry_seconds``,
``FAILOVER_DYNAMODB_RETRY_SECONDS``, 20 s by default: a DynamoDB blip or a regional hiccup of a few
seconds is waited out inside the request, and a longer outage fails the step temporarily, so that
the engine's backoff and the lease guard take over), and translates everything else into
:mod:`workers.errors`.

botocore's own retries are off (``standard`` mode, one attempt): tenacity is the one retry loop, so
that the budget and the log lines (attempt n, seconds left) say everything that happened. Its
``adaptive`` mode would add a client-side rate limiter that can delay a lease renewal behind other
requests of the process; the orchestrator sends a handful of requests per step, so it is not used.
Connect and read timeouts are short (2 s and 5 s): DynamoDB answers in milliseconds, and a request
stuck on a dead connection is better sent again.

A failed condition of ours is raised as :class:`ConditionFailed` for the caller to explain; it knows
nothing of groups, owners or locks (that is :class:`workers.dynamo.DynamoCoordination`). It also
creates the table (:meth:`DynamoTable.ensure`): string keys ``PK``/``SK``, on-demand billing, TTL on
``expiresAt``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoRegionError, WaiterError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from workers import dynamo_codec as codec
from workers.errors import OrchestratorError, PermanentError, TemporaryError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef, QueryOutputTypeDef, TransactWriteItemTypeDef

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRYABLE_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)
RETRYABLE_REASONS: Final = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
_CREDENTIAL_CODES: Final = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)


class _Transient(Exception):
    """Worth retrying inside the adapter: throttling, 5xx, transaction conflicts, connection trouble."""


class ConditionFailed(Exception):
    """A condition of ours failed; carries the old items DynamoDB returned (``ALL_OLD``)."""

    def __init__(self, error: ClientError, attempt: int) -> None:
        super().__init__(str(error))
        response: Mapping[str, Any] = error.response
        self.error = error
        self.attempt = attempt
        self.item: Mapping[str, Any] | None = response.get("Item")
        self.reasons: list[Mapping[str, Any]] = list(response.get("CancellationReasons") or [])

    def reason(self, index: int) -> tuple[bool, Mapping[str, Any] | None]:
        """Whether the ``index``-th transaction item's condition failed, and that item as it was."""
        if index >= len(self.reasons):
            return False, None
        reason = self.reasons[index]
        return reason.get("Code") == "ConditionalCheckFailed", reason.get("Item")


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "Unknown")


def _classify(error: ClientError, attempt: int) -> Exception:
    """What a ClientError of one attempt means: our condition failed, worth a retry, or itself."""
    code = _code(error)
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(error, attempt)
    if code == "TransactionCanceledException":
        reasons = {r.get("Code", "None") for r in error.response.get("CancellationReasons", [])}
        if "ConditionalCheckFailed" in reasons:
            return ConditionFailed(error, attempt)
        if reasons & RETRYABLE_REASONS:
            return _Transient(f"{code} ({', '.join(sorted(reasons))})")
        return error
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in RETRYABLE_CODES or status >= 500:
        return _Transient(f"{code}: {error.response.get('Error', {}).get('Message', '')}")
    return error


class DynamoTable:
    """Requests to one table with retries and error translation. Thread-safe; ``calls`` counts requests
    by DynamoDB operation, one per HTTP attempt (retries included)."""

    def __init__(
        self,
        table_name: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: DynamoDBClient | None = None,
        max_attempts: int | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 3.0,
        retry_deadline: float = 20.0,
        request_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        """Use ``client`` if given (the caller closes it; turn botocore's own retries off), else build one
        from the default credential chain with botocore retries off and short timeouts.

        Transient failures are retried for ``retry_deadline`` seconds (no attempt starts after it; one
        that started before may last ``request_timeout`` more), and at most ``max_attempts`` times if
        given, waiting ``backoff_initial * 2**n`` (at most ``backoff_max``) plus up to
        ``backoff_initial`` jitter.
        """
        self.name = table_name
        self._owns_client = client is None
        if client is None:
            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=request_timeout,
                tcp_keepalive=True,
            )
            client = _client(table_name, region_name, endpoint_url, config)
        self.client: DynamoDBClient = client
        self._max_attempts = max_attempts or 0
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._retry_deadline = retry_deadline
        self._calls_lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()

    def close(self) -> None:
        """Close the client if this object created it."""
        if self._owns_client:
            self.client.close()

    # --- the table -------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the table if missing (idempotent, safe from many processes), wait for ACTIVE, enable TTL."""
        what = f"ensure table {self.name!r}"

        def describe() -> Mapping[str, Any] | None:
            try:
                return self.client.describe_table(TableName=self.name)["Table"]
            except ClientError as e:
                if _code(e) == "ResourceNotFoundException":
                    return None
                raise

        def create() -> None:
            try:
                self.client.create_table(
                    TableName=self.name,
                    KeySchema=[
                        {"AttributeName": "PK", "KeyType": "HASH"},
                        {"AttributeName": "SK", "KeyType": "RANGE"},
                    ],
                    AttributeDefinitions=[
                        {"AttributeName": "PK", "AttributeType": "S"},
                        {"AttributeName": "SK", "AttributeType": "S"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as e:
                if _code(e) != "ResourceInUseException":  # another process created it first: fine
                    raise

        def wait_active() -> None:
            try:
                self.client.get_waiter("table_exists").wait(
                    TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
                )
            except WaiterError as e:
                raise TemporaryError(f"table {self.name!r} did not become ACTIVE in time: {e}") from e

        table = self.call("DescribeTable", what, describe)
        if table is None:
            self.call("CreateTable", what, create)
        if table is None or table.get("TableStatus") != "ACTIVE":
            self.call("DescribeTable", f"{what}: wait for ACTIVE", wait_active)
            table = self.call("DescribeTable", what, describe) or {}
        schema = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
        if schema != {"PK": "HASH", "SK": "RANGE"}:
            raise PermanentError(
                f"table {self.name!r} has key schema {schema}, expected PK (HASH) and SK (RANGE)"
            )
        self._ensure_ttl(what)

    def _ensure_ttl(self, what: str) -> None:
        def describe_ttl() -> tuple[str, str]:
            ttl = self.client.describe_time_to_live(TableName=self.name)["TimeToLiveDescription"]
            return ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName", "")

        def enable_ttl() -> None:
            try:
                self.client.update_time_to_live(
                    TableName=self.name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": codec.TTL_ATTRIBUTE},
                )
            except ClientError as e:
                if _code(e) != "ValidationException":  # "already enabled" / "in progress": checked below
                    raise

        status, attribute = self.call("DescribeTimeToLive", what, describe_ttl)
        if status not in ("ENABLED", "ENABLING"):
            self.call("UpdateTimeToLive", what, enable_ttl)
            status, attribute = self.call("DescribeTimeToLive", what, describe_ttl)
        if status not in ("ENABLED", "ENABLING"):
            raise TemporaryError(
                f"TTL of table {self.name!r} is {status}; run `failoverctl dynamodb init` again"
            )
        if attribute != codec.TTL_ATTRIBUTE:
            raise PermanentError(
                f"table {self.name!r} has TTL on {attribute!r}, expected {codec.TTL_ATTRIBUTE!r}"
            )

    # --- items -----------------------------------------------------------------------------------

    def get(self, pk: str, sk: str, what: str) -> dict[str, Any] | None:
        """One item, read consistently; None if there is none."""
        key = codec.key(pk, sk)
        request = partial(self.client.get_item, TableName=self.name, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = self.call("GetItem", what, request).get("Item")
        return item

    def get_many(self, pk: str, sks: list[str], what: str) -> dict[str, dict[str, Any]]:
        """Items of one partition by SK, read consistently in one BatchGetItem."""

        def request() -> list[dict[str, Any]]:
            keys = [codec.key(pk, sk) for sk in sks]
            response = self.client.batch_get_item(
                RequestItems={self.name: {"Keys": keys, "ConsistentRead": True}}
            )
            if response.get("UnprocessedKeys"):
                raise _Transient("BatchGetItem left keys unprocessed (throttled)")
            items: list[dict[str, Any]] = response.get("Responses", {}).get(self.name, [])
            return items

        return {codec.get_str(item, "SK"): item for item in self.call("BatchGetItem", what, request)}

    def put(self, item: codec.Item, what: str) -> None:
        request = partial(self.client.put_item, TableName=self.name, Item=item)
        self.call("PutItem", f"write {what}", request)

    def transact(self, what: str, items: list[TransactWriteItemTypeDef], request_token: str) -> None:
        request = partial(
            self.client.transact_write_items, TransactItems=items, ClientRequestToken=request_token
        )
        self.call("TransactWriteItems", what, request)

    def query(
        self, pk: str, prefix: str, what: str, *, newest_first: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """All items of ``pk`` whose SK starts with ``prefix`` (consistent), page after page."""
        items: list[dict[str, Any]] = []
        start_key: Mapping[str, Any] | None = None
        while True:
            kwargs: QueryInputTypeDef = {
                "TableName": self.name,
                "KeyConditionExpression": "PK = :pk AND begins_with(SK, :prefix)",
                "ExpressionAttributeValues": {":pk": codec.s(pk), ":prefix": codec.s(prefix)},
                "ConsistentRead": True,
                "ScanIndexForward": not newest_first,
            }
            if limit is not None:
                kwargs["Limit"] = limit - len(items)
            if start_key:
                kwargs["ExclusiveStartKey"] = start_key
            page: QueryOutputTypeDef = self.call("Query", what, partial(self._query_page, kwargs))
            items.extend(page.get("Items", []))
            start_key = page.get("LastEvaluatedKey")
            if not start_key or (limit is not None and len(items) >= limit):
                return items

    def _query_page(self, kwargs: QueryInputTypeDef) -> QueryOutputTypeDef:
        return self.client.query(**kwargs)

    # --- one request -----------------------------------------------------------------------------

    def call(self, operation: str, what: str, request: Callable[[], T]) -> T:
        """Send one request, retrying transient failures; translate everything else to workers.errors.

        A failed condition of ours raises :class:`ConditionFailed` (never retried).
        """
        attempts = 0
        started = time.monotonic()

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            with self._calls_lock:
                self.calls[operation] += 1
            try:
                return request()
            except ClientError as e:
                meaning = _classify(e, attempts)
                if meaning is e:
                    raise
                raise meaning from e
            except (BotoConnectionError, HTTPClientError) as e:
                raise _Transient(f"{type(e).__name__}: {e}") from e

        count = stop_after_attempt(self._max_attempts) if self._max_attempts else stop_never
        retrying = Retrying(
            stop=count | stop_before_delay(self._retry_deadline),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max)
            + wait_random(0, self._backoff_initial),  # jitter
            retry=retry_if_exception_type(_Transient),
            before_sleep=partial(self._log_retry, operation, what, started),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as e:
            log.error(
                "dynamodb_call_gave_up",
                table=self.name,
                operation=operation,
                what=what,
                attempt=self._of(attempts),
                elapsed=round(time.monotonic() - started, 2),
                error=str(e),
                next_action="raising TemporaryError; the caller retries later",
            )
            raise TemporaryError(
                f"DynamoDB {operation} on table {self.name!r} ({what}) still failing after "
                f"{attempts} attempts in {time.monotonic() - started:.1f}s: {e}{self._hint(e)}"
            ) from e
        except ClientError as e:
            raise self._permanent(e, operation, what) from e
        except BotoCoreError as e:
            raise PermanentError(f"DynamoDB {operation} on table {self.name!r} ({what}) failed: {e}") from e

    def _hint(self, error: _Transient) -> str:
        """What to check when DynamoDB could not be reached at all (not a throttle or a 5xx)."""
        if not isinstance(error.__cause__, BotoConnectionError | HTTPClientError):
            return ""
        return (
            f"; check that DynamoDB answers at {self.client.meta.endpoint_url} "
            "(FAILOVER_DYNAMODB_ENDPOINT_URL, or the AWS region: FAILOVER_AWS_REGION / AWS_REGION)"
        )

    def _of(self, attempt: int) -> str:
        """``attempt n of N`` when attempts are counted, else ``n (budget Ts)``."""
        if self._max_attempts:
            return f"{attempt} of {self._max_attempts}"
        return f"{attempt} (budget {self._retry_deadline:g}s)"

    def _log_retry(self, operation: str, what: str, started: float, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        left = self._retry_deadline - (time.monotonic() - started)
        log.warning(
            "dynamodb_call_retrying",
            table=self.name,
            operation=operation,
            what=what,
            attempt=self._of(state.attempt_number),
            error=str(error),
            next_action=f"retrying in {delay:.2f}s ({max(0.0, left):.1f}s of budget left)",
        )

    def _permanent(self, error: ClientError, operation: str, what: str) -> OrchestratorError:
        code = _code(error)
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            return PermanentError(
                f"DynamoDB table {self.name!r} not found in region {self.client.meta.region_name!r} "
                f"({operation} for {what}): run `failoverctl dynamodb init` to create it"
            )
        if code in _CREDENTIAL_CODES:
            return PermanentError(
                f"DynamoDB refused {operation} on table {self.name!r} ({what}): {code}: {message}; "
                "check the orchestrator's AWS credentials and IAM policy"
            )
        return PermanentError(
            f"DynamoDB {operation} on table {self.name!r} ({what}) failed: {code}: {message}"
        )


def _client(table: str, region_name: str | None, endpoint_url: str | None, config: Config) -> DynamoDBClient:
    """A boto3 client, or a PermanentError naming the setting that keeps one from being built."""
    try:
        return boto3.session.Session(region_name=region_name).client(
            "dynamodb", endpoint_url=endpoint_url, config=config
        )
    except NoRegionError as error:
        raise PermanentError(
            f"DynamoDB table {table!r}: no AWS region: set AWS_REGION or FAILOVER_AWS_REGION to the "
            "table's region"
        ) from error
    except (ValueError, BotoCoreError) as error:  # ValueError: botocore's "Invalid endpoint"
        raise PermanentError(
            f"DynamoDB table {table!r}: cannot build a client for endpoint {endpoint_url!r} "
            f"(FAILOVER_DYNAMODB_ENDPOINT_URL) in region {region_name!r} (FAILOVER_AWS_REGION): {error}"
        ) from error
