"""The benchmark's DynamoDB stand-in answers the workers' hot operations without moto's web framework
(:class:`tests.benchmarks.site_dynamo._Direct`): what a client reads back must be what moto's whole
server answers, results and errors alike. Both servers run here, sharing moto's backends, each client
in a region of its own so that each sees its own table."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, _Dispatcher, _QuietRequestHandler
from tests.benchmarks.site_dynamo import _Counted, _Direct, serve

TABLE = "direct-check"


def _client(port: int, region: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=region,
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
    )


@pytest.fixture
def clients() -> Iterator[tuple[Any, Any, _Counted, Any]]:
    """(a client of the direct front end, a client of moto's whole server, the direct one's counts,
    the direct one's server)."""
    direct = _Counted(_Direct(_Dispatcher()))
    # The direct front end on the stand-in's keep-alive server, moto's whole server on werkzeug's.
    servers = [
        serve(direct),
        make_server(
            "127.0.0.1", 0, _Counted(_Dispatcher()), threaded=True, request_handler=_QuietRequestHandler
        ),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    pair = (_client(servers[0].server_port, "eu-west-3"), _client(servers[1].server_port, "eu-north-1"))
    try:
        for client in pair:
            client.create_table(
                TableName=TABLE,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        yield pair[0], pair[1], direct, servers[0]
    finally:
        for client in pair:  # moto's backends outlive the servers: the next test creates the table again
            client.delete_table(TableName=TABLE)
        for server in servers:
            server.shutdown()
            server.server_close()


def _key(pk: str, sk: str = "lock") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


LOCKED = {**_key("g1"), "token": {"N": "7"}, "holder": {"S": "w1"}, "tags": {"L": [{"S": "a"}, {"N": "1"}]}}
CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("put", lambda c: c.put_item(TableName=TABLE, Item=LOCKED)),
    (
        "put-if-absent fails",
        lambda c: c.put_item(TableName=TABLE, Item=LOCKED, ConditionExpression="attribute_not_exists(pk)"),
    ),
    ("get", lambda c: c.get_item(TableName=TABLE, Key=_key("g1"), ConsistentRead=True)),
    ("get missing", lambda c: c.get_item(TableName=TABLE, Key=_key("nobody"))),
    (
        "update",
        lambda c: c.update_item(
            TableName=TABLE,
            Key=_key("g1"),
            UpdateExpression="SET #t = #t + :one, exp = :e",
            ConditionExpression="holder = :h",
            ExpressionAttributeNames={"#t": "token"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":e": {"N": "100.5"}, ":h": {"S": "w1"}},
            ReturnValues="ALL_NEW",
        ),
    ),
    (
        "update fails, old item back",
        lambda c: c.update_item(
            TableName=TABLE,
            Key=_key("g1"),
            UpdateExpression="SET exp = :e",
            ConditionExpression="holder = :h",
            ExpressionAttributeValues={":e": {"N": "1"}, ":h": {"S": "someone else"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        ),
    ),
    (
        "transact",
        lambda c: c.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {**_key("g1", "history#1"), "v": {"S": "x"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": _key("g1"),
                        "UpdateExpression": "SET active = :a",
                        "ExpressionAttributeValues": {":a": {"S": "site-b"}},
                    }
                },
            ]
        ),
    ),
    (
        "transact cancelled",
        lambda c: c.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {**_key("g1", "history#2"), "v": {"S": "y"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": _key("g1"),
                        "ConditionExpression": "#t = :t",
                        "ExpressionAttributeNames": {"#t": "token"},
                        "ExpressionAttributeValues": {":t": {"N": "1"}},
                    }
                },
            ]
        ),
    ),
    ("batch get", lambda c: c.batch_get_item(RequestItems={TABLE: {"Keys": [_key("g1"), _key("nobody")]}})),
    (
        "query",
        lambda c: c.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p AND begins_with(sk, :h)",
            ExpressionAttributeValues={":p": {"S": "g1"}, ":h": {"S": "history#"}},
        ),
    ),
    ("delete", lambda c: c.delete_item(TableName=TABLE, Key=_key("g1"), ReturnValues="ALL_OLD")),
    ("bad key", lambda c: c.get_item(TableName=TABLE, Key={"pk": {"S": "g1"}})),
    ("no such table", lambda c: c.get_item(TableName="missing", Key=_key("g1"))),
]


def _outcome(call: Callable[[Any], Any], client: Any) -> dict[str, Any]:
    try:
        answer = dict(call(client))
    except ClientError as error:
        answer = {key: value for key, value in error.response.items() if key != "ResponseMetadata"}
        answer["status"] = error.response["ResponseMetadata"]["HTTPStatusCode"]
        return {"error": answer}
    answer.pop("ResponseMetadata")
    return answer


def test_the_direct_front_end_answers_what_moto_answers(clients: tuple[Any, Any, _Counted, Any]) -> None:
    direct, whole, counted, _server = clients

    for name, call in CALLS:
        assert _outcome(call, direct) == _outcome(call, whole), name

    assert counted.calls["TransactWriteItems"] == 2 and counted.calls["CreateTable"] == 1


def test_the_stand_in_keeps_a_client_connection_across_calls_and_errors(
    clients: tuple[Any, Any, _Counted, Any],
) -> None:
    """DynamoDB's clients keep their connections; so must the stand-in (werkzeug's server closes each
    one), or the benchmark measures a TCP connection and a server thread per call. Every answer,
    errors included, leaves the connection at the next request: one client, one connection."""
    direct, _whole, counted, server = clients
    before = server.connections
    for _ in range(3):
        for _name, call in CALLS:
            _outcome(call, direct)
    assert counted.calls["GetItem"] >= 9
    assert server.connections - before == 0, "the table's creation already opened the client's connection"
