"""Benchmark: what one TransactWriteItems costs at the DynamoDB stand-in, moto's own and patched.

``.venv/bin/python -m tests.benchmarks.bench_moto_tx`` fills a table with 0, 1,000 and 3,000 items and
times 30 two-item transactions (an Update and a Put, as a lock and its history record) at the stand-in
(:mod:`tests.benchmarks.site_dynamo`, backend seconds only, no HTTP): moto's stock transaction copies
every table it touches first, so its cost grows with the table; the patched one does not.
"""

from __future__ import annotations

from sandbox.dynamo import dynamodb_client
from tests.benchmarks.bench_site import DynamoStandIn
from workers.dynamo import ensure_table

SIZES = (0, 1000, 3000)
TRANSACTIONS = 30


def measure(stock: bool) -> None:
    standin = DynamoStandIn(stock)
    client = dynamodb_client(standin.endpoint)
    try:
        ensure_table(client, "t")
        for size in SIZES:
            for i in range(standin.calls()["calls"].get("PutItem", 0), size):
                item = {"PK": {"S": f"group#{i}"}, "SK": {"S": "owner"}, "owner": {"S": "site-a"}}
                client.put_item(TableName="t", Item=item)
            before = standin.calls()["seconds"].get("TransactWriteItems", 0.0)
            for i in range(TRANSACTIONS):
                key = {"PK": {"S": f"group#{i}"}, "SK": {"S": "owner"}}
                update = {
                    "TableName": "t",
                    "Key": key,
                    "UpdateExpression": "SET epoch = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
                record = {"TableName": "t", "Item": {"PK": {"S": f"group#{i}"}, "SK": {"S": f"h#{size}"}}}
                client.transact_write_items(TransactItems=[{"Update": update}, {"Put": record}])
            spent = standin.calls()["seconds"]["TransactWriteItems"] - before
            name = "moto stock" if stock else "patched"
            print(f"{name:10s} {size:5d} items: {spent / TRANSACTIONS * 1000:7.1f} ms per TransactWriteItems")
    finally:
        client.close()
        standin.stop()


def main() -> None:
    for stock in (True, False):
        measure(stock)


if __name__ == "__main__":
    main()
