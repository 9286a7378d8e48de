"""Redis with TLS, a password and an ACL user: the URL forms the README documents reach the run
store's client (redis-py), the broker (kombu, which Flower uses too) with TLS verification and
credentials; and the shipped compose file and kustomize manifests turn a password on with no default
that works. (A live password and ACL user: tests/e2e/test_redis_auth.py.)"""

from __future__ import annotations

import ssl

import redis

from workers.app import create_app
from workers.settings import Settings

TLS_URL = (
    "rediss://failover:s3cret@redis.example:6380/0"
    "?ssl_cert_reqs=required&ssl_ca_certs=/etc/failover/redis/ca.crt"
)


def test_a_rediss_url_with_an_acl_user_reaches_the_run_store_client() -> None:
    pool = redis.ConnectionPool.from_url(TLS_URL)
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("failover", "s3cret")
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == "/etc/failover/redis/ca.crt"


def test_a_rediss_url_with_an_acl_user_reaches_the_broker() -> None:
    app = create_app(Settings(redis_url=TLS_URL))
    try:
        connection = app.connection_for_write()
        assert connection.transport_cls == "rediss"
        assert (connection.userid, connection.password) == ("failover", "s3cret")
        assert connection.ssl == {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": "/etc/failover/redis/ca.crt",
        }
        assert "s3cret" not in connection.as_uri()  # logs and Flower's page show no password
    finally:
        app.close()
